// Defence in depth for message HTML. The server renders markdown and sanitizes it
// (chat/rendering.py: no script, no event handlers, no images); this re-checks the
// same allowlist before the HTML reaches the page, so a server bug alone cannot put
// an <img> (a way to leak data to another site) or a script into the page. The
// Content-Security-Policy is the third line.

const TAGS = new Set([
  "P", "BR", "STRONG", "EM", "B", "I", "DEL", "CODE", "PRE", "BLOCKQUOTE", "UL", "OL", "LI",
  "A", "H1", "H2", "H3", "H4", "H5", "H6", "HR", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD",
]);
const ATTRIBUTES = { A: new Set(["href", "title"]), CODE: new Set(["class"]) };
const SCHEMES = new Set(["http:", "https:", "mailto:"]);

function clean(node) {
  for (const child of Array.from(node.childNodes)) {
    if (child.nodeType === Node.TEXT_NODE) continue;
    if (child.nodeType !== Node.ELEMENT_NODE || !TAGS.has(child.tagName)) {
      // Unknown elements go, text inside harmless containers stays.
      if (child.nodeType === Node.ELEMENT_NODE && !["SCRIPT", "STYLE", "IMG", "IFRAME", "OBJECT", "EMBED", "SVG", "MATH", "TEMPLATE"].includes(child.tagName)) {
        clean(child);
        child.replaceWith(...child.childNodes);
      } else {
        child.remove();
      }
      continue;
    }
    const allowed = ATTRIBUTES[child.tagName] || new Set();
    for (const attr of Array.from(child.attributes)) {
      if (!allowed.has(attr.name)) child.removeAttribute(attr.name);
    }
    if (child.tagName === "A") {
      let ok = false;
      try {
        ok = SCHEMES.has(new URL(child.getAttribute("href") || "", location.href).protocol);
      } catch {
        ok = false;
      }
      if (!ok) child.removeAttribute("href");
      child.setAttribute("rel", "noopener noreferrer nofollow ugc");
      child.setAttribute("target", "_blank");
    }
    clean(child);
  }
}

export function safeFragment(html) {
  // A <template> parses without running anything or loading any resource.
  const template = document.createElement("template");
  template.innerHTML = html || "";
  clean(template.content);
  return template.content;
}
