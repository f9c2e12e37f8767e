// Tighter audio-video sync for pages whose play buttons carry data-video (fit_rating): the audio
// clock leads; the muted video is aligned when the audio really starts ("playing") and then
// checked on every animation frame, not only on the coarse timeupdate events, so the video
// never drifts by a frame (1/25 s) or more. trial.js still starts and stops both.
(function () {
  "use strict";
  const TOLERANCE = 0.02; // seconds: half a 25 fps frame
  document.querySelectorAll("button.player[data-video]").forEach(function (button) {
    const audio = document.getElementById("audio-" + button.dataset.slot);
    const video = document.getElementById(button.dataset.video);
    if (!audio || !video) return;
    function align() {
      if (Math.abs(video.currentTime - audio.currentTime) > TOLERANCE) {
        video.currentTime = audio.currentTime;
      }
    }
    function follow() {
      if (audio.paused || audio.ended) return;
      align();
      if (video.paused && !video.ended) video.play().catch(function () {});
      requestAnimationFrame(follow);
    }
    audio.addEventListener("playing", function () {
      align();
      requestAnimationFrame(follow);
    });
  });
})();
