#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for the `slurm` tests and for trying the
# profile by hand. Debian/Ubuntu only; needs root (it installs packages and starts daemons).
#
#   tests/slurm/cluster.sh setup    install munge + slurm (apt), write the config, start the
#                                   daemons without systemd, wait until the node is idle
#   tests/slurm/cluster.sh status   print daemon and node state; exit 0 only if usable
#   tests/slurm/cluster.sh stop     stop the daemons this script started (packages stay)
#
# Idempotent: `setup` on a running, healthy cluster started with this configuration returns at
# once; on a half-started one, or one started with a different configuration (an older version of
# this script), it rewrites the configuration and restarts the daemons. Exit status is non-zero
# with a one-line reason on stderr when the cluster cannot be started (not root, no apt-get,
# packages not installable, daemons die).
#
# Environment (optional):
#   FVC_SLURM_GPUS=2         fake GPUs on the node (gres gpu, dummy device files)
#   FVC_SLURM_CPUS=<nproc>   CPUs the node advertises (more than the real ones is allowed)
#   FVC_SLURM_TIMEOUT=60     seconds to wait for the node to become idle
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/fvc-slurm # pid files and daemon logs of this script
# Test fixtures that apt-get install (this script, Chromium for the report test) take this lock
# first: under `pytest -n` they may run at the same time, and apt/dpkg refuse a second user.
APT_LOCK=/tmp/fvc-tests-apt.lock
SPOOL_CTLD=/var/spool/slurmctld
SPOOL_D=/var/spool/slurmd
PACKAGES=(munge slurm-client slurmctld slurmd)
NODE=$(hostname -s)
GPUS=${FVC_SLURM_GPUS:-2}
TIMEOUT=${FVC_SLURM_TIMEOUT:-60}

die() {
	echo "cluster.sh: $*" >&2
	exit 1
}
log() { echo "cluster.sh: $*" >&2; }

# A pid file is only trusted when that pid is alive (not a zombie) and runs the daemon it names:
# after the daemons were killed (a finished session, a reboot) the pid may be a zombie or reused.
pid_alive() { # pidfile [daemon name; default: the pid file's base name]
	local pid name=${2:-$(basename "$1" .pid)}
	[[ -f "$1" ]] || return 1
	pid=$(cat "$1" 2>/dev/null) || return 1
	[[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/stat" ]] || return 1
	[[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
	[[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name"* ]]
}

# SLURM clients wait a long time for a dead controller or munged: never let one hang setup.
scontrol() { timeout 10 "$(type -P scontrol)" "$@"; }
sinfo() { timeout 10 "$(type -P sinfo)" "$@"; }
munge_works() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true; }

healthy() {
	munge_works && pid_alive "$STATE_DIR/slurmctld.pid" &&
		pid_alive "$STATE_DIR/slurmd.pid" && scontrol ping >/dev/null 2>&1 &&
		[[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]
}

# apt-get, one test fixture at a time (APT_LOCK), waiting for any other dpkg user too.
apt_get() {
	flock "$APT_LOCK" apt-get -o DPkg::Lock::Timeout=600 "$@"
}

install_packages() {
	local missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	command -v apt-get >/dev/null || die "apt-get not found: cannot install ${missing[*]} (Debian/Ubuntu only)"
	log "installing ${missing[*]} (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	# Packages of a running system never start services here: no systemd, and we start the
	# daemons ourselves below.
	if ! apt_get install -y -q --no-install-recommends "${missing[@]}" >"$STATE_DIR/apt.log" 2>&1; then
		apt_get update -q >>"$STATE_DIR/apt.log" 2>&1 || true
		apt_get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE_DIR/apt.log" 2>&1 ||
			die "apt-get install ${missing[*]} failed (see $STATE_DIR/apt.log)"
	fi
}

# Writes the configuration to slurm.conf.tmp and gres.conf.tmp (empty without GPUs);
# install_config puts them in place.
render_config() {
	local cpus mem gres_node="" gres_types=""
	cpus=${FVC_SLURM_CPUS:-$(nproc)}
	# 90% of the RealMemory slurmd detects: a node that claims more than it has is drained.
	mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
	[[ -n "$mem" ]] || die "slurmd -C printed no RealMemory"
	mem=$((mem * 9 / 10))
	mkdir -p "$CONF_DIR"
	if ((GPUS > 0)); then
		gres_types="GresTypes=gpu"
		gres_node="Gres=gpu:$GPUS"
		# One line per fake GPU with a dummy device file: `Count=` alone leaves the node INVAL.
		# Jobs get CUDA_VISIBLE_DEVICES but no real GPU (torch falls back to the CPU).
		local devs=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty)
		((GPUS <= ${#devs[@]})) || die "FVC_SLURM_GPUS=$GPUS: at most ${#devs[@]} fake GPUs"
		for ((i = 0; i < GPUS; i++)); do
			echo "NodeName=$NODE Name=gpu File=${devs[$i]}"
		done >"$CONF_DIR/gres.conf.tmp"
	else
		: >"$CONF_DIR/gres.conf.tmp"
	fi
	cat >"$CONF_DIR/slurm.conf.tmp" <<EOF
# Written by tests/slurm/cluster.sh: a single-node test cluster on localhost.
ClusterName=fvc-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL_CTLD
SlurmdSpoolDir=$SPOOL_D
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by ancestry, kill over-memory jobs by polling.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# Finished jobs stay visible to squeue for 10 minutes: the profile's status checks use
# squeue, which needs MinJobAge >= 3 x slurm-init-seconds-before-status-checks.
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=30
# Batch jobs are not requeueable unless submitted with --requeue, as on sites where requeue is
# opt-in: scontrol requeue (and preemption with PreemptMode=REQUEUE) then works only on jobs
# the profile submitted with --requeue (slurm-requeue: true).
JobRequeue=0
# A requeued job may start again cred_expire + 1 s later (default 120 s). 30 s still leaves a
# loaded machine ample time to launch a job step with its credential.
AuthInfo=cred_expire=30
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres_node State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# Whether the rendered configuration differs from the one in place.
config_changed() {
	local gres=/dev/null
	[[ -e "$CONF_DIR/gres.conf" ]] && gres="$CONF_DIR/gres.conf"
	! cmp -s "$CONF_DIR/slurm.conf.tmp" "$CONF_DIR/slurm.conf" ||
		! cmp -s "$CONF_DIR/gres.conf.tmp" "$gres"
}

install_config() {
	mv "$CONF_DIR/slurm.conf.tmp" "$CONF_DIR/slurm.conf"
	if [[ -s "$CONF_DIR/gres.conf.tmp" ]]; then
		mv "$CONF_DIR/gres.conf.tmp" "$CONF_DIR/gres.conf"
	else
		rm -f "$CONF_DIR/gres.conf" "$CONF_DIR/gres.conf.tmp"
	fi
}

start_munge() {
	if pid_alive "$STATE_DIR/munged.pid" && munge_works; then
		return 0
	fi
	# A dead or stuck munged from an earlier start: clear it and its stale pid/socket files.
	pkill -9 -x munged 2>/dev/null || true
	rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
	if [[ ! -s /etc/munge/munge.key ]]; then
		dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
	fi
	chown munge:munge /etc/munge/munge.key
	chmod 400 /etc/munge/munge.key
	mkdir -p /run/munge /var/log/munge /var/lib/munge
	chown munge:munge /run/munge /var/log/munge /var/lib/munge
	chmod 755 /run/munge
	# munged refuses to run as root; it daemonizes itself.
	su -s /bin/sh munge -c "/usr/sbin/munged --force --pid-file=/run/munge/munged.pid" 8>&- ||
		die "munged failed to start (see /var/log/munge/munged.log)"
	for _ in $(seq 50); do
		[[ -s /run/munge/munged.pid ]] && break
		sleep 0.1
	done
	cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
	munge -n | unmunge >/dev/null 2>&1 || die "munge does not work (munge -n | unmunge failed)"
}

stop_pid() { # name
	local f="$STATE_DIR/$1.pid" pid
	pid_alive "$f" || {
		rm -f "$f"
		return 0
	}
	pid=$(cat "$f")
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$f"
}

start_slurm() {
	mkdir -p "$SPOOL_CTLD" "$SPOOL_D"
	# Restart both: a config change needs it, and a half-started cluster is not worth repairing.
	stop_pid slurmd
	stop_pid slurmctld
	# Strays not in our pid files (an earlier, killed run) would hold the ports.
	pkill -9 -x slurmd 2>/dev/null || true
	pkill -9 -x slurmctld 2>/dev/null || true
	# -i: ignore state files of an older configuration.
	/usr/sbin/slurmctld -i 8>&- || die "slurmctld failed to start (see $STATE_DIR/slurmctld.log)"
	# After an unclean stop slurmctld can take about a minute before it answers (seen here).
	local deadline=$((SECONDS + 2 * TIMEOUT))
	while ((SECONDS < deadline)); do
		scontrol ping >/dev/null 2>&1 && break
		sleep 0.2
	done
	scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer 'scontrol ping' (see $STATE_DIR/slurmctld.log)"
	/usr/sbin/slurmd 8>&- || die "slurmd failed to start (see $STATE_DIR/slurmd.log)"
}

wait_idle() {
	local state="" deadline=$((SECONDS + TIMEOUT))
	while ((SECONDS < deadline)); do
		state=$(node_state)
		case "$state" in
		idle | mixed | allocated | completing) return 0 ;;
		drain* | down* | inval* | *"*")
			scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
			;;
		esac
		sleep 0.5
	done
	die "node $NODE not idle after ${TIMEOUT}s (state '${state:-none}'; see $STATE_DIR/slurmd.log, $STATE_DIR/slurmctld.log)"
}

cmd_setup() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts munged/slurmctld/slurmd)"
	mkdir -p "$STATE_DIR"
	# One setup at a time: under `pytest -n` two test files may ask for the cluster at once; the
	# second then finds it running. The daemons are started with fd 8 closed (they would hold
	# the lock forever).
	exec 8>"$STATE_DIR/setup.lock"
	flock 8
	local t0=$SECONDS
	install_packages
	render_config
	if ! config_changed && healthy; then
		rm -f "$CONF_DIR/slurm.conf.tmp" "$CONF_DIR/gres.conf.tmp"
		log "cluster already running (node $NODE $(node_state))"
		return 0
	fi
	install_config
	start_munge
	start_slurm
	wait_idle
	log "cluster up in $((SECONDS - t0))s: node $NODE $(node_state), partition debug, $GPUS fake GPU(s)"
}

cmd_stop() {
	[[ $(id -u) -eq 0 ]] || die "must run as root"
	if command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
		scancel --full --quiet --state=PENDING,RUNNING,SUSPENDED --user=root 2>/dev/null || true
	fi
	stop_pid slurmd
	stop_pid slurmctld
	stop_pid munged
	log "stopped"
}

cmd_status() {
	local ok=0
	for d in munged slurmctld slurmd; do
		if pid_alive "$STATE_DIR/$d.pid"; then echo "$d: running (pid $(cat "$STATE_DIR/$d.pid"))"; else
			echo "$d: stopped"
			ok=1
		fi
	done
	if command -v sinfo >/dev/null && scontrol ping >/dev/null 2>&1; then
		sinfo -N -o "%N %P %T %c %m %G"
	else
		echo "slurmctld: not answering"
		ok=1
	fi
	healthy || ok=1
	return $ok
}

case "${1:-}" in
setup) cmd_setup ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
	echo "usage: $0 setup|stop|status" >&2
	exit 2
	;;
esac
