// Tighter audio-video sync for pages whose play buttons carry data-video (fit_rating, fit
// preference, emotion ratings with video): the audio clock leads and the muted video follows it,
// checked on every animation frame. A small drift is steered towards zero by nudging the video's
// playback rate; only a drift beyond SEEK_BEYOND (the start, a stall, a throttled tab) is
// corrected by a seek, and never while a seek is still under way. Seeks alone used to leave the
// video lagging by up to their tolerance, where the audio clock's own steps could push a frame
// past 1/25 s. trial.js still starts and stops both.
(function () {
  "use strict";
  const SEEK_BEYOND = 0.03; // seconds: three quarters of a 25 fps frame
  const GAIN = 3; // rate change per second of drift: 10 ms behind -> 3 % faster
  const MAX_NUDGE = 0.1; // the rate stays within 0.9-1.1 (the video is muted)
  document.querySelectorAll("button.player[data-video]").forEach(function (button) {
    const audio = document.getElementById("audio-" + button.dataset.slot);
    const video = document.getElementById(button.dataset.video);
    if (!audio || !video) return;
    function align() {
      if (video.seeking) return;
      const drift = video.currentTime - audio.currentTime;
      if (Math.abs(drift) > SEEK_BEYOND) {
        video.playbackRate = 1;
        video.currentTime = audio.currentTime;
        return;
      }
      const rate = 1 - Math.max(-MAX_NUDGE, Math.min(MAX_NUDGE, GAIN * drift));
      if (Math.abs(video.playbackRate - rate) > 0.002) video.playbackRate = rate;
    }
    function follow() {
      if (audio.paused || audio.ended) {
        video.playbackRate = 1;
        return;
      }
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
