// The console's glue, beside htmx: which live parts are stale, what a host was asked to do,
// and the running clock of a task. No framework: the server renders every part.
(() => {
  // Live parts poll with `every Ns [ccsStale(this)]` and fetch only if the task's event stream
  // brought something since their last fetch: at most one request per part and period, and
  // none for a quiet task. They must be stable elements (their content is swapped), so that
  // what they have seen survives their refreshes.
  let version = 0;
  for (const name of ["sse:transition", "sse:end"]) {
    document.addEventListener(name, () => { version += 1; });
  }
  window.ccsStale = (elt) => {
    const stale = (elt.ccsSeen ?? 0) !== version; // as rendered with the page: version 0
    elt.ccsSeen = version;
    return stale;
  };

  // A host asked to pause, resume or stop shows "pausing", "resuming" or "stopping" until its
  // agent confirms (its state changes); a refresh of the table meanwhile keeps saying so.
  const asked = new Map(); // subtask id -> [what was asked, its state then]
  document.addEventListener("htmx:afterSwap", () => {
    for (const row of document.querySelectorAll("tr[data-subtask]")) {
      const id = row.dataset.subtask;
      if (row.dataset.asked) asked.set(id, [row.dataset.asked, row.dataset.status]);
      const wanted = asked.get(id);
      if (!wanted) continue;
      if (wanted[1] !== row.dataset.status) {
        asked.delete(id);
        continue;
      }
      const state = row.querySelector(".state");
      state.textContent = wanted[0];
      state.className = `state s-${wanted[0]}`;
    }
  });

  // Elapsed time since a task started, ticking until it ends.
  const since = (seconds) => {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? `${h}h ${two(m)}m ${two(r)}s` : m ? `${m}m ${two(r)}s` : `${r}s`;
  };
  const tick = () => {
    for (const clock of document.querySelectorAll(".elapsed[data-start]")) {
      const end = clock.dataset.end ? Number(clock.dataset.end) : Date.now() / 1000;
      clock.textContent = since(end - Number(clock.dataset.start));
    }
  };
  document.addEventListener("htmx:afterSwap", tick);
  document.addEventListener("DOMContentLoaded", tick);
  setInterval(tick, 1000);
})();
