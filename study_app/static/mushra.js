// MUSHRA screen: a clip (the Reference too) is fetched and decoded the first time it is played,
// never before, so the server's log of media fetches (listening.py) tells which slots a
// participant can have heard. Every decoded clip plays on one Web Audio clock through its own
// gain node; "playing" a sample only moves the gains, so switching keeps the playhead. A clip
// decoded while others play joins them at the shared playhead: its source starts on a sample
// frame of the context with the offset the shared clock has reached there, so every source
// stays on the same sample. The page knows clips only by opaque slot.
//
// The Reference's waveform is drawn here on a <canvas> from the outline the server computes
// (min/max per bucket, a fixed size: participant.py `peaks`), so drawing it fetches no audio,
// rather than by wavesurfer.js: wavesurfer v7 builds its shadow DOM with an inline <style>
// element, which this site's Content-Security-Policy (no inline styles, no nonces) blocks, and
// it would play and fetch the clip through its own media element, beside the Web Audio player
// that keeps every sample on one clock. Only the open Reference is drawn: a sample's waveform
// could give it away.
(function () {
  "use strict";
  const root = document.getElementById("mushra");
  const form = document.getElementById("trial-form");
  if (!root || !form) return;
  const status = document.getElementById("mushra-status");
  const stopButton = document.getElementById("mushra-stop");
  const loopButton = document.getElementById("mushra-loop");
  const canvas = document.getElementById("mushra-wave");
  const loopText = document.getElementById("mushra-loop-text");
  const moved = form.querySelector('input[name="moved"]');
  const buttons = Array.from(root.querySelectorAll("button.mushra-play"));
  const sliders = Array.from(root.querySelectorAll("input.mushra-slider"));
  const touched = new Set();
  const Ctx = window.AudioContext || window.webkitAudioContext;
  let ctx = null;
  const urls = {};
  root.querySelectorAll("audio.mushra-src").forEach(function (el) {
    urls[el.dataset.slot] = el.getAttribute("src");
  });
  const slotNames = Object.keys(urls);
  const buffers = {}; // slot -> decoded AudioBuffer, once played
  const loading = {}; // slot -> the promise of its buffer, while (or once) fetched
  let sources = {};
  let gains = {};
  let starts = {}; // slot -> [when, offset] its playing source was started with
  let running = false; // the shared clock runs: every decoded clip has a playing source
  let active = null;
  let startedAt = 0;
  let offsetAt = 0;
  let duration = 0; // from the server's outline of the Reference, before any audio is fetched
  let outline = null; // that outline's (min, max) int8 pairs, 127 = full scale
  const LEAD = 0.05; // seconds between scheduling a source and its start
  // The loop region (seconds); with `loop.on` false the whole clip plays round and round.
  const loop = { on: false, start: 0, end: 0 };
  const MIN_LOOP = 0.1; // shorter regions are a click, not a drag
  // require_full_listen: each sample (and the Reference) must be audible for at least its whole
  // duration, in one go or in pieces, before the screen can be submitted.
  const requireFull = root.dataset.requireFullListen === "true";
  const submit = document.getElementById("submit");
  const hint = document.getElementById("lock-hint");
  const heard = {};
  let audibleSince = null;
  const BANDS = [[80, "excellent"], [60, "good"], [40, "fair"], [20, "poor"], [0, "bad"]];

  // The Reference's outline: uint32 frames, uint32 sample rate, then (min, max) int8 pairs.
  function loadOutline() {
    ctx = new Ctx();
    return fetch(root.dataset.peaks, { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("outline: " + r.status);
        return r.arrayBuffer();
      })
      .then(function (data) {
        const view = new DataView(data);
        const frames = view.getUint32(0, true);
        const rate = view.getUint32(4, true);
        // In whole frames of the context (decoding resamples to its rate), rounded down: no
        // decoded clip is shorter, so every source loops over the same span.
        duration = Math.floor(frames * ctx.sampleRate / rate) / ctx.sampleRate;
        outline = new Int8Array(data, 8);
      });
  }

  // Fetch and decode a slot's clip, once; a failed fetch can be retried by playing it again.
  function load(slot) {
    if (!loading[slot]) {
      loading[slot] = fetch(urls[slot], { credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error(slot + ": " + r.status);
          return r.arrayBuffer();
        })
        .then(function (data) { return ctx.decodeAudioData(data); })
        .then(function (buffer) {
          buffers[slot] = buffer;
          if (buffer.duration < duration) {
            // (Not expected: the import checks durations.) Every source must loop over the
            // same span, so the clip's end moves in, and a running clock restarts with it.
            duration = buffer.duration;
            loop.start = Math.min(loop.start, duration);
            loop.end = Math.min(loop.end, duration);
            if (running) seek(position());
          }
          return buffer;
        })
        .catch(function (error) {
          delete loading[slot];
          throw error;
        });
    }
    return loading[slot];
  }

  function region() {
    if (loop.on && loop.end - loop.start >= MIN_LOOP) return [loop.start, loop.end];
    return [0, duration];
  }

  function clamp(t, a, b) { return Math.max(a, Math.min(t, b)); }

  // The shared playhead at context time t (seconds into the clip).
  function positionAt(t) {
    if (!running) return offsetAt;
    const r = region();
    const span = r[1] - r[0];
    // (before the scheduled start the playhead stands at the offset)
    const elapsed = Math.max(0, t - startedAt);
    return r[0] + ((elapsed + offsetAt - r[0]) % span + span) % span;
  }

  function position() { return positionAt(ctx ? ctx.currentTime : 0); }

  // The first sample frame of the context at or after `t + LEAD`: sources started on frames
  // whose offsets differ by whole frames play the same samples at the same time.
  function nextFrame(t) { return Math.ceil((t + LEAD) * ctx.sampleRate) / ctx.sampleRate; }

  function addSource(slot, at, from) {
    const r = region();
    const source = ctx.createBufferSource();
    source.buffer = buffers[slot];
    source.loop = true;
    source.loopStart = r[0];
    source.loopEnd = r[1];
    const gain = ctx.createGain();
    gain.gain.value = 0;
    source.connect(gain).connect(ctx.destination);
    source.start(at, from);
    sources[slot] = source; gains[slot] = gain; starts[slot] = [at, from];
  }

  // Start the shared clock at `offset`, with a source for every clip decoded so far.
  function startAll(offset) {
    stopAll();
    const r = region();
    const at = nextFrame(ctx.currentTime);
    const from = clamp(offset, r[0], r[1] - 0.01);
    startedAt = at;
    offsetAt = from;
    running = true;
    Object.keys(buffers).forEach(function (slot) { addSource(slot, at, from); });
  }

  // A clip decoded while the clock runs: its source starts where the shared playhead is then.
  function join(slot) {
    if (!running || sources[slot]) return;
    const at = Math.max(nextFrame(ctx.currentTime), startedAt);
    addSource(slot, at, positionAt(at));
  }

  function stopAll() {
    Object.values(sources).forEach(function (s) { try { s.stop(); } catch (e) { /* ended */ } });
    sources = {}; gains = {}; starts = {};
    running = false;
  }

  // Make `slot` (or nothing, for null) the one audible clip: 5 ms ramps, a click-free
  // crossfade that keeps every clip at the same position.
  function fadeTo(slot) {
    const now = ctx.currentTime;
    Object.keys(gains).forEach(function (s) {
      gains[s].gain.cancelScheduledValues(now);
      gains[s].gain.setValueAtTime(gains[s].gain.value, now);
      gains[s].gain.linearRampToValueAtTime(s === slot ? 1 : 0, now + 0.005);
    });
    audibleSince = slot && sources[slot] ? Math.max(now, starts[slot][0]) : null;
  }

  function account() {
    if (active && audibleSince !== null) {
      heard[active] = (heard[active] || 0) + Math.max(0, ctx.currentTime - audibleSince);
    }
    audibleSince = null;
  }

  function heardSeconds(slot) {
    const current = slot === active && audibleSince !== null
      ? Math.max(0, ctx.currentTime - audibleSince) : 0;
    return (heard[slot] || 0) + current;
  }

  // Next stays disabled until every slider is set (and, with require_full_listen, every clip
  // heard); the server refuses an answer with an unset slider all the same.
  function updateLock() {
    const unset = sliders.length - touched.size;
    let waiting = [];
    if (requireFull) {
      waiting = duration ? slotNames.filter(function (slot) {
        return !buffers[slot] || heardSeconds(slot) < duration - 0.05;
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
    if (!duration) return;
    if (ctx.state === "suspended") ctx.resume();
    account();
    if (buffers[slot]) {
      if (running) join(slot); else startAll(offsetAt);
      fadeTo(slot);
    } else {
      // Its first play: silent (the clock, if it runs, runs on) until it is fetched and decoded.
      if (running) fadeTo(null);
      status.textContent = "Loading…";
      load(slot).then(function () {
        if (running) {
          join(slot); // (whichever slot is playing now: every decoded clip keeps in step)
        } else if (active === slot) {
          startAll(offsetAt);
        }
        if (active === slot) {
          account();
          fadeTo(slot);
          status.textContent = READY;
        }
      }, function () {
        if (active === slot) status.textContent = "This sample could not be loaded. Play it again.";
      });
    }
    if (active !== slot && !restarted) {
      const counter = form.querySelector('input[name="plays_' + slot + '"]');
      if (counter) counter.value = String(parseInt(counter.value || "0", 10) + 1);
    }
    active = slot;
    buttons.forEach(function (b) {
      b.setAttribute("aria-pressed", b.dataset.slot === slot ? "true" : "false");
    });
    root.dataset.playing = slot;
    if (!animating) { animating = true; requestAnimationFrame(frame); }
  }

  function stop() {
    offsetAt = region()[0]; // Stop, not pause: the next play starts at the (loop's) start
    account();
    stopAll();
    active = null;
    audibleSince = null;
    root.dataset.playing = "";
    buttons.forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
    draw();
  }

  // Move the shared playhead (seconds); a playing sample goes on playing from there.
  function seek(seconds) {
    const r = region();
    const slot = active;
    offsetAt = clamp(seconds, r[0], r[1] - 0.01);
    if (slot) {
      account();
      startAll(offsetAt);
      audibleSince = null;
      active = null;
      select(slot, true); // the same sample again: not a new play
    }
    draw();
  }

  function loopChanged(from) {
    const r = region();
    const text = loop.end - loop.start >= MIN_LOOP
      ? loop.start.toFixed(2) + " s – " + loop.end.toFixed(2) + " s" : "";
    loopButton.setAttribute("aria-pressed", loop.on ? "true" : "false");
    root.dataset.loop = loop.on ? r[0].toFixed(3) + "-" + r[1].toFixed(3) : "";
    loopText.textContent = loop.on ? "Loop: " + text
      : (text ? "Loop off (region " + text + ")" : "Loop: whole clip");
    seek(from === undefined ? r[0] : from);
  }

  function setLoop(a, b) {
    loop.start = clamp(Math.min(a, b), 0, duration);
    loop.end = clamp(Math.max(a, b), 0, duration);
    loop.on = loop.end - loop.start >= MIN_LOOP;
    loopChanged();
  }

  // ---- the Reference's waveform -------------------------------------------------------------
  let peaks = null; // per canvas column: [min, max] over every channel
  let drag = null;

  // The outline's buckets shared out over the canvas's columns (each column at least one).
  function computePeaks(width) {
    const buckets = outline.length / 2;
    const out = [];
    for (let x = 0; x < width; x++) {
      const first = Math.min(buckets - 1, Math.floor(x * buckets / width));
      const end = Math.max(first + 1, Math.floor((x + 1) * buckets / width));
      let lo = 0; let hi = 0;
      for (let b = first; b < end; b++) {
        lo = Math.min(lo, outline[2 * b]);
        hi = Math.max(hi, outline[2 * b + 1]);
      }
      out.push([lo / 127, hi / 127]);
    }
    return out;
  }

  function draw() {
    if (!outline) return;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height || !peaks) {
      canvas.width = width; canvas.height = height; // (also clears it)
      peaks = computePeaks(width);
    }
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    g.fillStyle = "#eef1f5";
    g.fillRect(0, 0, width, height);
    const toX = function (t) { return (t / duration) * width; };
    const shown = drag ? [Math.min(drag.from, drag.to), Math.max(drag.from, drag.to)]
      : (loop.end - loop.start >= MIN_LOOP ? [loop.start, loop.end] : null);
    if (shown) {
      g.fillStyle = loop.on || drag ? "rgba(240, 165, 0, 0.35)" : "rgba(90, 90, 90, 0.15)";
      g.fillRect(toX(shown[0]), 0, toX(shown[1]) - toX(shown[0]), height);
    }
    const mid = height / 2;
    g.fillStyle = "#1f5fbf";
    for (let x = 0; x < peaks.length; x++) {
      const top = mid - peaks[x][1] * mid * 0.95;
      const bottom = mid - peaks[x][0] * mid * 0.95;
      g.fillRect(x, top, 1, Math.max(ratio, bottom - top));
    }
    const at = toX(position());
    g.fillStyle = "#b00020";
    g.fillRect(at - ratio, 0, 2 * ratio, height);
    const now = position().toFixed(1);
    if (canvas.getAttribute("aria-valuenow") !== now) { // (not 60 times a second)
      canvas.setAttribute("aria-valuenow", now);
      canvas.setAttribute("aria-valuetext", "playhead at " + now + " s of " +
        duration.toFixed(1) + " s");
    }
  }

  let animating = false;
  function frame() {
    draw();
    animating = Boolean(active);
    if (animating) requestAnimationFrame(frame);
  }

  function timeAt(event) {
    const box = canvas.getBoundingClientRect();
    return clamp((event.clientX - box.left) / box.width, 0, 1) * duration;
  }

  canvas.addEventListener("pointerdown", function (event) {
    if (!duration || event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    drag = { from: timeAt(event), to: timeAt(event), x: event.clientX };
    draw();
  });
  canvas.addEventListener("pointermove", function (event) {
    if (!drag) return;
    drag.to = timeAt(event);
    draw();
  });
  function endDrag(event, cancelled) {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (cancelled) { draw(); return; }
    d.to = timeAt(event);
    if (Math.abs(event.clientX - d.x) < 6 || Math.abs(d.to - d.from) < MIN_LOOP) {
      // a click, not a drag: move the playhead there (inside the loop while it is on)
      seek(d.to);
    } else {
      setLoop(d.from, d.to);
    }
  }
  canvas.addEventListener("pointerup", function (event) { endDrag(event, false); });
  canvas.addEventListener("pointercancel", function (event) { endDrag(event, true); });
  canvas.addEventListener("keydown", function (event) {
    if (!duration || event.altKey || event.ctrlKey || event.metaKey) return;
    const steps = { ArrowLeft: -0.25, ArrowDown: -0.25, ArrowRight: 0.25, ArrowUp: 0.25 };
    if (event.key in steps) {
      seek(position() + steps[event.key]);
    } else if (event.key === "Home") {
      seek(region()[0]);
    } else if (event.key === "End") {
      seek(region()[1]);
    } else {
      return;
    }
    event.preventDefault();
  });
  if (window.ResizeObserver) new ResizeObserver(function () { draw(); }).observe(canvas);

  // ---- sliders ------------------------------------------------------------------------------
  sliders.forEach(function (slider) {
    const slot = slider.dataset.slot;
    const out = root.querySelector('output[data-for="' + slot + '"]');
    const score = form.querySelector('input[name="score_' + slot + '"]');
    // "click" too: a click on the track at the resting position moves nothing (no "input"),
    // yet it is a rating.
    function set() {
      const value = parseInt(slider.value, 10);
      const band = BANDS.find(function (b) { return value >= b[0]; })[1];
      score.value = slider.value;
      out.textContent = slider.value;
      slider.classList.remove("unset");
      slider.setAttribute("aria-valuetext", slider.value + ", " + band);
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

  // ---- buttons and keyboard shortcuts -------------------------------------------------------
  buttons.forEach(function (b) {
    b.addEventListener("click", function () { select(b.dataset.slot); });
  });
  stopButton.addEventListener("click", stop);
  function toggleLoop() {
    if (loop.end - loop.start < MIN_LOOP) {
      loopText.textContent = "Drag on the waveform (or press [ and ]) to choose a region first.";
      return;
    }
    loop.on = !loop.on;
    loopChanged(position());
  }
  loopButton.addEventListener("click", toggleLoop);

  const samples = buttons.filter(function (b) { return b.dataset.slot !== "ref"; });
  document.addEventListener("keydown", function (event) {
    // (AltGr, which some layouts need for [ and ], reports Ctrl+Alt on Windows)
    const altGr = event.getModifierState && event.getModifierState("AltGraph");
    if (!duration || event.metaKey || ((event.altKey || event.ctrlKey) && !altGr)) return;
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" ||
                   (target.tagName === "INPUT" && target.type !== "range"))) return;
    const key = event.key.toLowerCase();
    const here = position();
    if (key === "r") {
      select("ref");
    } else if (/^[1-9]$/.test(key) && samples[parseInt(key, 10) - 1]) {
      select(samples[parseInt(key, 10) - 1].dataset.slot);
    } else if (key === "s") {
      stop();
    } else if (key === "l") {
      toggleLoop();
    } else if (key === "[") {
      // the end stays where it was unless the new start passes it
      setLoop(here, loop.end - here >= MIN_LOOP ? loop.end : duration);
    } else if (key === "]") {
      setLoop(here - loop.start >= MIN_LOOP ? loop.start : 0, here);
    } else {
      return;
    }
    event.preventDefault();
  });

  // Exposed for tests: the shared playhead (seconds), which slot is audible, the loop region
  // and the loop bounds the playing sources really use.
  // The decoded slots, whether the shared clock runs, where it started, and each playing
  // source's start time and offset (whose playhead the shared one must be).
  root.mushraState = function () {
    const seconds = {};
    Object.keys(buffers).forEach(function (slot) { seconds[slot] = heardSeconds(slot); });
    const playing = Object.values(sources);
    return {
      slot: active,
      position: position(),
      heard: seconds,
      duration: duration,
      loop: { on: loop.on, start: loop.start, end: loop.end },
      sourceLoops: playing.map(function (s) { return [s.loopStart, s.loopEnd]; }),
      decoded: Object.keys(buffers).sort(),
      audible: active && audibleSince !== null ? active : null,
      sampleRate: ctx ? ctx.sampleRate : null,
      clock: running ? { startedAt: startedAt, offset: offsetAt } : null,
      sourceStarts: Object.keys(starts).map(function (slot) {
        return { slot: slot, when: starts[slot][0], offset: starts[slot][1] };
      }),
    };
  };

  const READY = "Ready. Play the Reference and each sample; rate every sample.";
  loadOutline().then(function () {
    canvas.setAttribute("aria-valuemax", duration.toFixed(1));
    buttons.forEach(function (b) { b.disabled = false; });
    stopButton.disabled = false;
    loopButton.disabled = false;
    draw();
    root.dataset.loaded = "true";
    updateLock();
    if (requireFull) setInterval(updateLock, 250);
    status.textContent = READY;
  }).catch(function () {
    status.textContent = "The sounds could not be loaded. Please reload the page.";
  });
})();
