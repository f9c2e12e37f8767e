// Dashboard: polls the JSON summary every few seconds, so it refreshes without a reload.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  if (!root) return;
  const REFRESH_MS = 4000;

  function cell(text, href) {
    const td = document.createElement("td");
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function fill(tableId, rows) {
    const body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren.apply(body, rows.map(function (cells) {
      const tr = document.createElement("tr");
      cells.forEach(function (c) { tr.appendChild(c); });
      return tr;
    }));
  }

  function set(id, value) { document.getElementById(id).textContent = value; }

  function show(data) {
    set("n-started", data.started);
    set("n-completed", data.completed + (data.max_completed ? " / " + data.max_completed : ""));
    set("n-excluded", data.excluded);
    set("n-median", data.median_completion_seconds === null ? "–"
      : (data.median_completion_seconds / 60).toFixed(1));
    set("quality-line", "Failed headphone screening: " + data.failed_screening +
      " · failed catch/attention items: " + data.failed_catch +
      " · answers faster than the audio: " + data.too_fast_answers +
      " · answers before the audio was downloaded whole (unheard): " + data.unheard_answers +
      " · possible re-entries under another Prolific id: " + data.possible_reentries);
    fill("per-block", data.responses_per_block.map(function (b) {
      return [cell(b.block), cell(b.type), cell(String(b.responses)),
        cell(String(b.unheard)), cell(String(b.too_quick))];
    }));
    const perCondition = [];
    Object.entries(data.responses_per_condition).forEach(function ([block, counts]) {
      Object.entries(counts).forEach(function ([condition, n]) {
        perCondition.push([cell(block), cell(condition), cell(String(n))]);
      });
    });
    fill("per-condition", perCondition);
    fill("balance", data.balance.map(function (b) {
      return [cell(b.block), cell(String(b.cells)), cell(b.min + "–" + b.max),
        cell(b.arrangement_min === undefined ? "" : b.arrangement_min + "–" + b.arrangement_max)];
    }));
    fill("participants", data.participants.map(function (p) {
      const flags = [];
      if (p.failed_screening) flags.push("failed screening");
      if (p.failed_catch) flags.push("failed catch");
      if (p.too_fast) flags.push(p.too_fast + " too fast");
      if (p.unheard) flags.push(p.unheard + " unheard");
      if (p.too_quick) flags.push(p.too_quick + " too quick");
      if (p.screened_out) flags.push("screened out");
      if (p.possible_reentry_of) {
        flags.push("possible re-entry of " + p.possible_reentry_of.split("|").join(", ") +
                   " (" + p.reentry_evidence.split("|").join(", ") + ")");
      }
      return [
        cell(p.participant, root.dataset.participantBase.replace("PID", p.participant)),
        cell(p.external_id || ""),
        cell(p.completed ? "completed" : p.answered + " / " + p.trials),
        cell(flags.join(", ")),
      ];
    }));
    set("refreshed", "Updated " + new Date().toLocaleTimeString());
  }

  function refresh() {
    fetch(root.dataset.source, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(show)
      .catch(function () { set("refreshed", "Could not refresh; retrying."); })
      .finally(function () { setTimeout(refresh, REFRESH_MS); });
  }
  refresh();
})();
