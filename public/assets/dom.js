// Building DOM elements: text is always set as text, never parsed as HTML.

/** An element with attributes (`class`, `text` and the rest) and children; null, false and undefined are skipped. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else el.setAttribute(k, String(v));
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function table(cls, headers, rows) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: cls },
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          headers.map((x) => h('th', { scope: 'col', class: x.class, title: x.title, text: x.text })),
        ),
      ),
      h('tbody', null, rows),
    ),
  );
}

export function empty(text) {
  return h('p', { class: 'empty', text });
}
