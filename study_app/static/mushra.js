// MUSHRA screen: every clip of the screen is fetched and decoded, then all are started together
// on the same Web Audio clock, each through its own gain node; "playing" a sample only moves
// the gains, so switching keeps the playhead. The page knows clips only by opaque slot.
(function () {
  "use strict";
  const root = document.getElementById("mushra");
  const form = document.getElementById("trial-form");
  if (!root || !form) return;
  const status = document.getElementById("mushra-status");
  const stopButton = document.getElementById("mushra-stop");
  const loopStart = document.getElementById("loop-start");
  const loopEnd = document.getElementById("loop-end");
  const moved = form.querySelector('input[name="moved"]');
  const buttons = Array.from(root.querySelectorAll("button.mushra-play"));
  const sliders = Array.from(root.querySelectorAll("input.mushra-slider"));
  const touched = new Set();
  const Ctx = window.AudioContext || window.webkitAudioContext;
  let ctx = null;
  const buffers = {};
  let sources = {};
  let gains = {};
  let active = null;
  let startedAt = 0;
  let offsetAt = 0;
  // require_full_listen: each sample (and the Reference) must be audible for at least its whole
  // duration, in one go or in pieces, before the screen can be submitted.
  const requireFull = root.dataset.requireFullListen === "true";
  const submit = document.getElementById("submit");
  const hint = document.getElementById("lock-hint");
  const heard = {};
  let audibleSince = null;

  function decodeAll() {
    ctx = new Ctx();
    const loads = Array.from(root.querySelectorAll("audio.mushra-src")).map(function (el) {
      return fetch(el.getAttribute("src"), { credentials: "same-origin" })
        .then(function (r) { return r.arrayBuffer(); })
        .then(function (data) { return ctx.decodeAudioData(data); })
        .then(function (buffer) { buffers[el.dataset.slot] = buffer; });
    });
    return Promise.all(loads);
  }

  function region() {
    const duration = Math.min.apply(null, Object.values(buffers).map(function (b) {
      return b.duration;
    }));
    let a = parseFloat(loopStart.value) || 0;
    let b = parseFloat(loopEnd.value) || 0;
    if (!(b > a)) { a = 0; b = duration; }
    return [Math.max(0, Math.min(a, duration)), Math.max(0, Math.min(b, duration))];
  }

  function position() {
    if (!active) return offsetAt;
    const r = region();
    const span = r[1] - r[0];
    return r[0] + ((ctx.currentTime - startedAt + offsetAt - r[0]) % span + span) % span;
  }

  function startAll(offset) {
    stopAll();
    const r = region();
    const at = ctx.currentTime + 0.05;
    sources = {}; gains = {};
    Object.keys(buffers).forEach(function (slot) {
      const source = ctx.createBufferSource();
      source.buffer = buffers[slot];
      source.loop = true;
      source.loopStart = r[0];
      source.loopEnd = r[1];
      const gain = ctx.createGain();
      gain.gain.value = 0;
      source.connect(gain).connect(ctx.destination);
      source.start(at, Math.max(r[0], Math.min(offset, r[1] - 0.01)));
      sources[slot] = source; gains[slot] = gain;
    });
    startedAt = at;
    offsetAt = Math.max(r[0], Math.min(offset, r[1] - 0.01));
  }

  function stopAll() {
    Object.values(sources).forEach(function (s) { try { s.stop(); } catch (e) { /* ended */ } });
    sources = {}; gains = {};
  }

  function account() {
    if (active && audibleSince !== null) {
      heard[active] = (heard[active] || 0) + Math.max(0, ctx.currentTime - audibleSince);
    }
    audibleSince = null;
  }

  function heardSeconds(slot) {
    const running = slot === active && audibleSince !== null
      ? Math.max(0, ctx.currentTime - audibleSince) : 0;
    return (heard[slot] || 0) + running;
  }

  // Next stays disabled until every slider is set (and, with require_full_listen, every clip
  // heard); the server refuses an answer with an unset slider all the same.
  function updateLock() {
    const unset = sliders.length - touched.size;
    let waiting = [];
    if (requireFull) {
      waiting = Object.keys(buffers).length ? Object.keys(buffers).filter(function (slot) {
        return heardSeconds(slot) < buffers[slot].duration - 0.05;
      }) : ["loading"];
      root.dataset.waiting = String(waiting.length);
    }
    submit.disabled = unset > 0 || waiting.length > 0;
    if (waiting.length) {
      hint.textContent = "Listen to the Reference and every sample all the way through to submit.";
    } else if (unset) {
      hint.textContent = "Set every slider to submit (" + unset + " not set yet).";
    } else {
      hint.textContent = "";
    }
  }

  function select(slot, restarted) {
    if (ctx.state === "suspended") ctx.resume();
    account();
    if (!Object.keys(sources).length) startAll(region()[0]);
    const now = ctx.currentTime;
    Object.keys(gains).forEach(function (s) {
      // 5 ms ramps: a click-free crossfade that keeps every clip at the same position
      gains[s].gain.cancelScheduledValues(now);
      gains[s].gain.setValueAtTime(gains[s].gain.value, now);
      gains[s].gain.linearRampToValueAtTime(s === slot ? 1 : 0, now + 0.005);
    });
    if (active !== slot && !restarted) {
      const counter = form.querySelector('input[name="plays_' + slot + '"]');
      if (counter) counter.value = String(parseInt(counter.value || "0", 10) + 1);
    }
    active = slot;
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", b.dataset.slot === slot ? "true" : "false");
    });
    root.dataset.playing = slot;
    audibleSince = Math.max(ctx.currentTime, startedAt);
  }

  function stop() {
    account();
    stopAll();
    active = null;
    root.dataset.playing = "";
    buttons.forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
  }

  function restartLoop() {
    if (!active) return;
    const slot = active;
    startAll(region()[0]);
    active = null;
    select(slot, true); // the same sample again: not a new play
  }

  sliders.forEach(function (slider) {
    const slot = slider.dataset.slot;
    const out = root.querySelector('output[data-for="' + slot + '"]');
    const score = form.querySelector('input[name="score_' + slot + '"]');
    // "click" too: a click on the track at the resting position moves nothing (no "input"),
    // yet it is a rating.
    function set() {
      score.value = slider.value;
      out.textContent = slider.value;
      slider.classList.remove("unset");
      slider.removeAttribute("aria-valuetext");
      touched.add(slot);
      moved.value = touched.size === sliders.length ? "all" : "some";
      updateLock();
    }
    slider.addEventListener("input", set);
    slider.addEventListener("change", set);
    slider.addEventListener("click", set);
  });
  moved.value = "none";
  updateLock();

  buttons.forEach(function (b) {
    b.addEventListener("click", function () { select(b.dataset.slot); });
  });
  stopButton.addEventListener("click", stop);
  loopStart.addEventListener("change", restartLoop);
  loopEnd.addEventListener("change", restartLoop);

  // Exposed for tests: the shared playhead (seconds) and which slot is audible.
  root.mushraState = function () {
    const seconds = {};
    Object.keys(buffers).forEach(function (slot) { seconds[slot] = heardSeconds(slot); });
    return { slot: active, position: position(), heard: seconds };
  };

  decodeAll().then(function () {
    buttons.forEach(function (b) { b.disabled = false; });
    stopButton.disabled = false;
    root.dataset.loaded = "true";
    updateLock();
    if (requireFull) setInterval(updateLock, 250);
    status.textContent = "Ready. Play the Reference and each sample; rate every sample.";
  }).catch(function () {
    status.textContent = "The sounds could not be loaded. Please reload the page.";
  });
})();
