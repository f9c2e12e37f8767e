// Trial pages: play buttons, play counts, the full-listen lock, video sync, response time.
// The page knows clips only by slot (a, b, x, clip, tones); nothing here can tell conditions apart.
(function () {
  "use strict";
  const form = document.getElementById("trial-form");
  if (!form) return;
  const shownAt = performance.now();
  const submit = document.getElementById("submit");
  const hint = document.getElementById("lock-hint");
  const requireFull = form.dataset.requireFullListen === "true";
  const blockMaxPlays = parseInt(form.dataset.maxPlays || "0", 10);
  const answerSets = form.querySelectorAll("[data-answer]");
  const players = [];

  form.querySelectorAll("button.player").forEach(function (button) {
    const slot = button.dataset.slot;
    const audio = document.getElementById("audio-" + slot);
    if (!audio) return;
    const video = button.dataset.video ? document.getElementById(button.dataset.video) : null;
    const maxPlays = parseInt(button.dataset.maxPlays || String(blockMaxPlays), 10);
    const player = {
      slot: slot, button: button, audio: audio, video: video, maxPlays: maxPlays,
      optional: button.hasAttribute("data-optional"), plays: 0, heard: false,
      counter: form.querySelector('input[name="plays_' + slot + '"]'),
    };
    players.push(player);
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", function () { toggle(player); });
    audio.addEventListener("ended", function () {
      player.heard = true;
      button.classList.add("heard");
      stopped(player);
      if (player.maxPlays && player.plays >= player.maxPlays) button.disabled = true;
      updateLock();
    });
    if (video) {
      // The audio clock leads; the muted video follows it. av_sync.js steers it frame by frame;
      // this coarse check is the backstop for a drift it did not catch.
      audio.addEventListener("timeupdate", function () {
        if (Math.abs(video.currentTime - audio.currentTime) > 0.15) {
          video.currentTime = audio.currentTime;
        }
      });
    }
  });

  function stopped(player) {
    player.button.classList.remove("playing");
    player.button.setAttribute("aria-pressed", "false");
    if (player.video) player.video.pause();
  }

  function stop(player) {
    if (!player.audio.paused) player.audio.pause();
    stopped(player);
  }

  function toggle(player) {
    const wasPlaying = !player.audio.paused;
    players.forEach(stop); // switching stops whatever is playing
    if (wasPlaying) return;
    if (player.maxPlays && player.plays >= player.maxPlays) return;
    player.audio.currentTime = 0;
    if (player.video) {
      player.video.currentTime = 0;
      player.video.play().catch(function () {});
    }
    player.audio.play().then(function () {
      player.plays += 1;
      if (player.counter) player.counter.value = String(player.plays);
      player.button.classList.add("playing");
      player.button.setAttribute("aria-pressed", "true");
    }).catch(function () {
      hint.textContent = "The sound could not start. Please press the button again.";
    });
  }

  function updateLock() {
    const waiting = players.filter(function (p) { return !p.optional && !p.heard; });
    const locked = requireFull && waiting.length > 0;
    submit.disabled = locked;
    answerSets.forEach(function (set) { set.disabled = locked; });
    hint.textContent = locked
      ? "Listen to " + (waiting.length > 1 ? "every sound" : "the sound") + " to the end to answer."
      : "";
  }

  document.addEventListener("keydown", function (event) {
    const target = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target && (target.tagName === "TEXTAREA" || target.type === "text")) return;
    const key = event.key.toLowerCase();
    const player = players.find(function (p) { return p.slot === key; }) ||
      (key === "p" ? players.find(function (p) { return !p.optional; }) : null);
    if (player && !player.button.disabled) {
      event.preventDefault();
      toggle(player);
    }
  });

  form.addEventListener("submit", function (event) {
    if (submit.disabled) { event.preventDefault(); return; }
    form.querySelector('input[name="rt_ms"]').value = String(Math.round(performance.now() - shownAt));
    players.forEach(stop);
    // One click, one answer: the server ignores repeats, and the button says so at once.
    setTimeout(function () { submit.disabled = true; }, 0);
  });

  updateLock();

  // A pause page (P.808 rest period): Next unlocks when the countdown ends.
  const rest = document.getElementById("rest");
  if (rest) {
    const left = document.getElementById("rest-left");
    const until = shownAt + 1000 * parseFloat(rest.dataset.restSeconds || "0");
    submit.disabled = true;
    (function tick() {
      const remaining = Math.max(0, Math.ceil((until - performance.now()) / 1000));
      left.textContent = String(remaining);
      if (remaining > 0) { setTimeout(tick, 250); } else { submit.disabled = false; }
    })();
  }
})();
