// Draws the ```mermaid blocks of the manual (<pre class="mermaid">) as diagrams.
// mermaid is loaded from a CDN when the page is viewed; offline, or if the script cannot
// load, the blocks simply stay readable text.
(function () {
  "use strict";
  var blocks = document.querySelectorAll("pre.mermaid");
  if (!blocks.length) {
    return;
  }
  import("https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.esm.min.mjs")
    .then(function (module) {
      var mermaid = module.default;
      mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
      // the blocks are <pre class="mermaid"><code>text</code></pre>: hand mermaid the
      // bare text
      blocks.forEach(function (pre) {
        pre.textContent = pre.textContent;
      });
      return mermaid.run({ querySelector: "pre.mermaid" });
    })
    .catch(function (err) {
      console.info("mermaid not loaded; diagrams are shown as text", err);
    });
})();
