// Test driver injected into a copy of Snakemake's report.html (tests/workflow/test_report_page.py).
// After the report app has rendered, it walks the app's own views the way a reader's clicks do
// (menu -> category -> subcategory -> a result's view button) and records what each view
// rendered: the page text and every <img> with its decoded pixel size. The record goes into
// a <pre> element with id fvc-check, as JSON, which `chromium --headless --dump-dom` then prints.
(async function () {
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const record = { views: {}, shown: {}, errors: [] };
  const snapshot = (name) => {
    record.views[name] = document.querySelector("#app").innerText;
  };
  const decodedImages = async () => {
    const out = [];
    for (const img of document.querySelectorAll("#app img")) {
      if (!img.complete) {
        await new Promise((r) => { img.onload = r; img.onerror = r; });
      }
      out.push({ src: img.src.slice(0, 22), width: img.naturalWidth, height: img.naturalHeight });
    }
    return out;
  };
  try {
    await wait(1000);
    snapshot("home");
    for (const category of Object.keys(categories)) {
      app.setView({ navbarMode: "menu" });
      await wait(200);
      app.showCategory(category);
      await wait(300);
      snapshot("category " + category);
      for (const subcategory of Object.keys(categories[category])) {
        app.setView({ navbarMode: "subcategory", category: category, subcategory: subcategory });
        await wait(300);
        snapshot("subcategory " + category + "/" + subcategory);
        for (const path of categories[category][subcategory]) {
          const entry = results[path];
          app.showResultInfo(path);
          await wait(300);
          snapshot("result " + path);
          if (entry.mime_type && entry.mime_type.startsWith("image/")) {
            app.setView({ content: "img", contentPath: entry.data_uri, resultPath: path });
            await wait(500);
            record.shown[path] = await decodedImages();
          } else if (entry.mime_type === "text/html") {
            app.setView({ content: "html", contentPath: entry.data_uri, resultPath: path });
            await wait(500);
            record.shown[path] = Array.from(document.querySelectorAll("#app iframe")).map(
              (f) => ({ src: f.src.slice(0, 22) })
            );
          }
        }
      }
    }
  } catch (err) {
    record.errors.push(String(err && err.stack ? err.stack : err));
  }
  const pre = document.createElement("pre");
  pre.id = "fvc-check";
  pre.textContent = JSON.stringify(record);
  document.body.appendChild(pre);
})();
