// The what-if's sliders: re-ask the server (GET /whatif/result) as they move.
const form = document.getElementById('whatif');
if (form) {
  let pending = null;
  const update = () => {
    for (const input of form.querySelectorAll('input[type=range]')) {
      input.nextElementSibling.textContent = input.value;
    }
    const query = new URLSearchParams(new FormData(form)).toString();
    if (pending) pending.abort();
    pending = new AbortController();
    fetch('/whatif/result?' + query, {signal: pending.signal})
      .then(r => r.text().then(t => ({ok: r.ok, t})))
      .then(({ok, t}) => {
        const box = document.getElementById('whatif-result');
        if (ok) { box.outerHTML = t; } else { box.textContent = t; }
        history.replaceState(null, '', '/whatif?' + query);
      }).catch(() => {});
  };
  form.addEventListener('input', update);
  form.addEventListener('change', update);
}
