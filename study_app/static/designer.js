// Study designer: edits the same design object the YAML file holds, block by block.
// The server validates (POST .../check as you edit, POST design.json to save) and owns the truth.
(function () {
  "use strict";
  const root = document.getElementById("designer");
  if (!root) return;
  let state = null;
  let checkTimer = null;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function ([key, value]) {
      if (value === false || value === null || value === undefined) return;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": root.dataset.csrf },
      body: JSON.stringify(body),
      credentials: "same-origin",
    }).then(function (response) { return response.json(); });
  }

  function showProblems(problems, okText) {
    const box = document.getElementById("designer-problems");
    box.replaceChildren();
    box.className = problems.length ? "problems" : "saved";
    if (!problems.length) { box.textContent = okText || ""; return; }
    problems.forEach(function (p) { box.appendChild(el("p", { text: p })); });
  }

  function percent(value) {
    return value === null || value === undefined ? "–" : Math.round(100 * value) + " %";
  }

  // The power of the report's verdicts for each ABX and emotion-rating block, from the
  // simulated tables the server reads (study_app/power_hint.py), with the design it was read
  // at and what the simulation assumed.
  function assumptionsText(hint) {
    const a = hint.assumptions;
    const n = a.simulations_per_design;
    const common = "Simulated: " + n + " studies per design drawn from the model the report " +
      "fits and refitted by lme4 (Monte Carlo SE at most " + percent(Math.sqrt(0.25 / n)) + "); ";
    if (hint.kind === "realism") {
      const sd = a.variance_sd_logit;
      return common + "logit SDs: listener " + sd.participant_sd + ", listener × condition " +
        sd.participant_condition_sd + ", source " + sd.unit_sd + ", clip " + sd.clip_sd +
        "; equivalence margin ±" + a.equivalence_margin + ", alpha " + a.alpha +
        ". Accuracy is that of a typical listener on a typical clip (the model's estimate).";
    }
    const sd = a.variance_sd_points;
    return common + "SDs in scale points: listener " + sd.participant_sd +
      ", listener × condition " + sd.participant_condition_sd + ", source " + sd.unit_sd +
      ", clip " + sd.clip_sd + ", rating noise " + sd.noise_sd + "; alpha " + a.alpha +
      ", two-sided. A shift is the condition's mean valence minus the reference's.";
  }

  function showPower(hints) {
    const box = document.getElementById("designer-power");
    if (!box) return;
    box.replaceChildren();
    if (!hints || !hints.length) { box.hidden = true; return; }
    box.hidden = false;
    box.appendChild(el("h2", { text: "Power of the report's tests" }));
    hints.forEach(function (hint) {
      const d = hint.design;
      const what = hint.kind === "realism" ? "ABX block " : "Emotion-rating block ";
      const parts = [el("h3", { text: what + hint.block }),
        el("p", { text: d.conditions + " generated condition" + (d.conditions === 1 ? "" : "s") +
          " against the reference; " + d.sources + " source recordings; each listener hears " +
          d.sources_heard + " of them per condition." })];
      if (hint.rows.length) {
        const head = el("tr", {}, [el("th", { scope: "col", text: "Listeners" })].concat(
          hint.questions.map(function (q) { return el("th", { scope: "col", text: q }); }),
          [el("th", { scope: "col", text: "Report's verdicts" })]));
        const body = hint.rows.map(function (row) {
          const mark = hint.cap && row.participants <= hint.cap ? " (within your cap)" : "";
          return el("tr", {}, [el("th", { scope: "row", text: row.participants + mark })].concat(
            hint.questions.map(function (_, i) { return el("td", { text: percent(row["q" + i]) }); }),
            [el("td", { class: row.calibrated ? "calibrated" : "exploratory",
              title: row.calibration, text: row.calibrated ? "calibrated" : "exploratory" })]));
        });
        parts.push(el("div", { class: "table-scroll", tabindex: "0", role: "region",
          "aria-label": "power of block " + hint.block }, [el("table", { class: "power-table" },
          [el("thead", {}, [head]), el("tbody", {}, body)])]));
        const needed = [];
        hint.questions.forEach(function (q, i) {
          if (!hint.is_power[i]) return;
          const n = hint.needed["q" + i];
          needed.push(q + ": " + (n ? n + " listeners" : "more listeners than simulated"));
        });
        parts.push(el("p", { text: "For 80 % power, " + needed.join("; ") + "." }));
      }
      hint.notes.forEach(function (note) { parts.push(el("p", { class: "note", text: note })); });
      parts.push(el("p", { class: "note", text: assumptionsText(hint) }));
      box.appendChild(el("section", { class: "power-hint", "data-block": hint.block }, parts));
    });
  }

  function check(okText) {
    post(root.dataset.check, { design: state.design }).then(function (result) {
      showProblems(result.problems, result.ok ? okText : "");
      state.power = result.power;
      showPower(result.power);
    });
  }

  function changed() {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(function () { check("No problems found. Not saved yet."); }, 400);
  }

  function labelled(text, input, extraClass) {
    return el("label", { class: "field " + (extraClass || "") }, [el("span", { text: text }), input]);
  }

  function fieldInput(block, field) {
    const id = "f-" + block.id + "-" + field.key;
    const disabled = !state.editable;
    const value = block[field.key];
    const name = field.key.replace(/_/g, " ");
    if (field.kind === "bool") {
      const input = el("input", { type: "checkbox", id: id, disabled: disabled,
        "data-key": field.key, onchange: function () { block[field.key] = input.checked; changed(); } });
      input.checked = Boolean(value);
      return el("label", { class: "check" }, [input, el("span", { text: name })]);
    }
    if (field.kind === "number") {
      const input = el("input", { type: "number", id: id, min: "0", disabled: disabled,
        "data-key": field.key, value: value === null || value === undefined ? "" : String(value),
        placeholder: field.default === null ? "default" : "",
        oninput: function () {
          block[field.key] = input.value === "" ? null : parseInt(input.value, 10);
          changed();
        } });
      return labelled(name, input);
    }
    if (field.kind === "choices") {
      const chosen = new Set(value || []);
      const boxes = field.choices.map(function (choice) {
        const input = el("input", { type: "checkbox", value: choice, disabled: disabled,
          "data-key": field.key,
          onchange: function () {
            if (input.checked) chosen.add(choice); else chosen.delete(choice);
            block[field.key] = field.choices.filter(function (c) { return chosen.has(c); });
            changed();
          } });
        input.checked = chosen.has(choice);
        return el("label", { class: "check inline-check" }, [input, el("span", { text: choice })]);
      });
      return el("fieldset", { class: "choice-field" }, [el("legend", { text: name })].concat(boxes));
    }
    if (field.kind === "pairs") {
      // Pairs of conditions to compare; none ticked means every pair of the block's conditions.
      const same = function (p, q) { return (p[0] === q[0] && p[1] === q[1]) || (p[0] === q[1] && p[1] === q[0]); };
      const chosen = (value || []).slice();
      const boxes = field.choices.map(function (pair) {
        const input = el("input", { type: "checkbox", value: pair.join("|"), disabled: disabled,
          "data-key": field.key,
          onchange: function () {
            const rest = chosen.filter(function (p) { return !same(p, pair); });
            chosen.length = 0;
            rest.forEach(function (p) { chosen.push(p); });
            if (input.checked) chosen.push(pair.slice());
            block[field.key] = chosen.length ? chosen.slice() : null;
            changed();
          } });
        input.checked = chosen.some(function (p) { return same(p, pair); });
        return el("label", { class: "check inline-check" },
          [input, el("span", { text: pair[0] + " vs " + pair[1] })]);
      });
      return el("fieldset", { class: "choice-field" },
        [el("legend", { text: name + " (none ticked: every pair)" })].concat(boxes));
    }
    const multiline = field.kind === "markdown" || field.key === "instructions";
    const input = el(multiline ? "textarea" : "input", { id: id, disabled: disabled,
      "data-key": field.key, rows: multiline ? "5" : null,
      oninput: function () { block[field.key] = input.value === "" ? null : input.value; changed(); } });
    input.value = value === null || value === undefined ? "" : String(value);
    return labelled(name + (field.kind === "markdown" ? " (Markdown)" : ""), input);
  }

  function move(index, delta) {
    const blocks = state.design.blocks;
    const target = index + delta;
    if (target < 0 || target >= blocks.length) return;
    [blocks[index], blocks[target]] = [blocks[target], blocks[index]];
    render();
    changed();
  }

  function renderBlock(block, index) {
    const type = state.types[block.type] || { label: block.type, fields: [] };
    type.fields.forEach(function (field) {  // designs saved before an option existed
      if (block[field.key] === undefined) block[field.key] = field.default;
    });
    const disabled = !state.editable;
    const idInput = el("input", { value: block.id, disabled: disabled, class: "block-id",
      "aria-label": "block id",
      oninput: function () { block.id = idInput.value; changed(); } });
    const header = el("div", { class: "block-header" }, [
      el("strong", { text: (index + 1) + ". " + type.label }), idInput,
      el("button", { type: "button", disabled: disabled || index === 0, text: "↑",
        "aria-label": "move up", onclick: function () { move(index, -1); } }),
      el("button", { type: "button", disabled: disabled || index === state.design.blocks.length - 1,
        text: "↓", "aria-label": "move down", onclick: function () { move(index, 1); } }),
      el("button", { type: "button", disabled: disabled, text: "Remove", class: "remove-block",
        onclick: function () { state.design.blocks.splice(index, 1); render(); changed(); } }),
    ]);
    return el("section", { class: "block-card", "data-block-type": block.type,
      "data-block-index": String(index) },
      [header].concat(type.fields.map(function (field) { return fieldInput(block, field); })));
  }

  function newBlock(typeName) {
    const used = new Set(state.design.blocks.map(function (b) { return b.id; }));
    let n = 1;
    while (used.has(typeName + (n === 1 ? "" : n))) n += 1;
    const block = { id: typeName + (n === 1 ? "" : n), type: typeName };
    state.types[typeName].fields.forEach(function (field) {
      block[field.key] = Array.isArray(field.default) ? field.default.slice() : field.default;
    });
    return block;
  }

  function general() {
    const design = state.design;
    design.completion = design.completion || {};
    const disabled = !state.editable;
    function text(label, get, set, attrs) {
      const input = el("input", Object.assign({ disabled: disabled,
        oninput: function () { set(input.value); changed(); } }, attrs || {}));
      input.value = get() === null || get() === undefined ? "" : String(get());
      return labelled(label, input);
    }
    return el("section", { class: "block-card general" }, [
      el("h2", { text: "Study" }),
      text("Title", function () { return design.title; }, function (v) { design.title = v; },
        { id: "design-title" }),
      text("Short name for links", function () { return design.slug; },
        function (v) { design.slug = v; }, { id: "design-slug" }),
      text("Completion code (empty: generated)", function () { return design.completion.code; },
        function (v) { design.completion.code = v || null; }, { id: "design-code" }),
      text("Redirect URL at the end ({code} is replaced)",
        function () { return design.completion.redirect_url; },
        function (v) { design.completion.redirect_url = v || null; }, { id: "design-redirect" }),
      // One code (and redirect) per outcome, as Prolific takes them: docs/design-format.md.
      text("Code when screened out (failed screening; empty: generated)",
        function () { return design.completion.screened_out_code; },
        function (v) { design.completion.screened_out_code = v || null; },
        { id: "design-screened-out-code" }),
      text("Redirect URL when screened out ({code} is replaced)",
        function () { return design.completion.screened_out_redirect_url; },
        function (v) { design.completion.screened_out_redirect_url = v || null; },
        { id: "design-screened-out-redirect" }),
      text("Code when attention checks failed (empty: generated)",
        function () { return design.completion.failed_attention_code; },
        function (v) { design.completion.failed_attention_code = v || null; },
        { id: "design-failed-attention-code" }),
      text("Redirect URL when attention checks failed ({code} is replaced)",
        function () { return design.completion.failed_attention_redirect_url; },
        function (v) { design.completion.failed_attention_redirect_url = v || null; },
        { id: "design-failed-attention-redirect" }),
      text("Stop after this many completed participants (empty: no cap)",
        function () { return design.completion.max_completed; },
        function (v) { design.completion.max_completed = v === "" ? null : parseInt(v, 10); },
        { id: "design-cap", type: "number", min: "1" }),
      el("p", { class: "note", text: "Stimulus set: " + design.stimulus_set + " · " +
        state.segments + " segments · conditions: " + state.conditions.join(", ") }),
    ]);
  }

  function render() {
    const typeSelect = el("select", { id: "add-block-type", "aria-label": "block type" },
      Object.keys(state.types).map(function (name) {
        return el("option", { value: name, text: state.types[name].label });
      }));
    const controls = state.editable ? el("div", { class: "actions" }, [
      typeSelect,
      el("button", { type: "button", id: "add-block", text: "Add block", onclick: function () {
        state.design.blocks.push(newBlock(typeSelect.value)); render(); changed();
      } }),
      el("button", { type: "button", id: "save-design", class: "primary", text: "Save design",
        onclick: save }),
    ]) : null;
    const parts = [
      general(),
      el("h2", { text: "Blocks" }),
      el("div", { id: "blocks" }, state.design.blocks.map(renderBlock)),
      controls,
      el("div", { id: "designer-problems", "aria-live": "polite" }),
      el("div", { id: "designer-power", hidden: true }),
    ];
    root.replaceChildren.apply(root, parts.filter(Boolean));
    showPower(state.power);
  }

  function save() {
    post(root.dataset.save, { design: state.design }).then(function (result) {
      if (!result.ok) { showProblems(result.problems); return; }
      state.design = result.design;
      if (result.slug && location.pathname.indexOf("/studies/" + result.slug + "/") < 0) {
        location.href = location.pathname.replace(/\/studies\/[^/]+\//, "/studies/" + result.slug + "/");
        return;
      }
      render();
      showProblems([], "Saved.");
    });
  }

  fetch(root.dataset.source, { credentials: "same-origin" })
    .then(function (response) { return response.json(); })
    .then(function (data) { state = data; render(); check(""); });
})();
