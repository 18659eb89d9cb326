// Live camera: send camera frames to /v1/live one at a time (the next one leaves when the answer to
// the last has come back, so a slow server lowers the frame rate instead of building a queue), and draw
// each tracked person's box with its combined age and gender over the video. Plain JS, no dependencies.
// The session's tally of different people by age band and gender stays on the page after Stop (the final
// one is fetched from the server, which keeps ended sessions' tallies for a while) and downloads as CSV/JSON.
"use strict";

(() => {
  const KEY_STORAGE = "fd-api-key"; // the key app.js saves
  const FRAME_SIDE = 640; // frames are sent at most this wide (640x480 from a 4:3 camera)
  const JPEG_QUALITY = 0.8;
  const FPS_WINDOW_MS = 3000;
  const FEMALE = "#ec4899";
  const MALE = "#3b82f6";
  const UNKNOWN = "#facc15";

  const $ = (id) => document.getElementById(id);
  const els = {
    button: $("live-button"), panel: $("live-panel"), video: $("live-video"), overlay: $("live-overlay"),
    stats: $("live-stats"), tracks: $("live-tracks"), stop: $("live-stop"), status: $("status"),
    bands: $("bands-input"), tally: $("live-tally"), tallyNote: $("live-tally-note"), tallyRows: $("live-tally-rows"),
    tallyCsv: $("live-tally-csv"), tallyJson: $("live-tally-json"),
  };
  const TALLY_COLUMNS = ["band", "female", "male", "unknown", "total"];
  const FINAL_TRIES = 20; // 5 s for the frame in work at Stop to finish
  if (!els.button || !navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") return;

  const grab = document.createElement("canvas");
  let stream = null;
  let session = null;
  let running = false;
  let startedAt = 0;
  let answered = []; // times (ms) of recent answers, for the frame rate
  let tally = null; // the latest tally of the current (or last) session

  function headers(extra) {
    const key = sessionStorage.getItem(KEY_STORAGE) || "";
    return Object.assign(key ? { "X-API-Key": key } : {}, extra || {});
  }

  function say(text) {
    els.stats.textContent = text;
  }

  async function errorText(resp) {
    const body = await resp.json().catch(() => null);
    const message = (body && body.error && body.error.message) || `the server answered HTTP ${resp.status}`;
    return resp.status === 401 ? `${message} (enter the API key above)` : message;
  }

  async function openSession() {
    const bands = els.bands ? els.bands.value.trim() : "";
    const query = bands ? `?${new URLSearchParams({ bands })}` : "";
    const resp = await fetch(`v1/live/sessions${query}`, { method: "POST", headers: headers() });
    if (!resp.ok) throw new Error(await errorText(resp));
    session = (await resp.json()).session;
  }

  function colour(gender) {
    return gender === "female" ? FEMALE : gender === "male" ? MALE : UNKNOWN;
  }

  function label(t) {
    const [low, high] = t.age_interval;
    let text = `#${t.track_id} ${Math.round(t.age)} (${Math.round(low)}–${Math.round(high)})`;
    if (t.gender) text += ` · ${t.gender} ${Math.round(100 * t.gender_probability)}%`;
    return text;
  }

  // The overlay has the video's on-screen size in device pixels; boxes come in frame pixels.
  function draw(result) {
    const rect = els.video.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    const canvas = els.overlay;
    canvas.width = Math.max(1, Math.round(rect.width * ratio));
    canvas.height = Math.max(1, Math.round(rect.height * ratio));
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const sx = canvas.width / result.width;
    const sy = canvas.height / result.height;
    const line = Math.max(2, Math.round(2 * ratio));
    const font = Math.max(12, Math.round(13 * ratio));
    ctx.font = `600 ${font}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    ctx.lineWidth = line;
    result.faces.filter((f) => f.track_id === null).forEach((f) => {
      const [x1, y1, x2, y2] = f.box;
      ctx.setLineDash([6 * ratio, 4 * ratio]);
      ctx.strokeStyle = UNKNOWN;
      ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    });
    ctx.setLineDash([]);
    result.tracks.forEach((t) => {
      const [x1, y1, x2, y2] = t.box;
      const c = colour(t.gender);
      ctx.strokeStyle = c;
      ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      const text = label(t);
      const w = ctx.measureText(text).width + 8;
      const h = font + 6;
      const lx = Math.min(Math.max(0, x1 * sx), canvas.width - w);
      const ly = y1 * sy - h >= 0 ? y1 * sy - h : Math.min(y2 * sy, canvas.height - h);
      ctx.fillStyle = c;
      ctx.fillRect(lx, ly, w, h);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, lx + 4, ly + 3);
    });
    // For tests and anyone inspecting the page: what is drawn.
    canvas.dataset.tracks = JSON.stringify(result.tracks.map((t) => ({ id: t.track_id, box: t.box })));
  }

  function fillTable(result) {
    els.tracks.textContent = "";
    result.tracks.forEach((t) => {
      const row = document.createElement("tr");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour(t.gender);
      const cells = [
        `#${t.track_id}`, t.age.toFixed(1), `${t.age_interval[0].toFixed(0)}–${t.age_interval[1].toFixed(0)}`,
        t.gender || "–", t.gender_probability == null ? "–" : `${(100 * t.gender_probability).toFixed(0)}%`,
        String(t.frames),
      ];
      cells.forEach((value, col) => {
        const cell = document.createElement("td");
        if (col === 0) cell.append(swatch);
        cell.append(value);
        row.append(cell);
      });
      els.tracks.append(row);
    });
  }

  function showRate(result) {
    const now = performance.now();
    answered.push(now);
    answered = answered.filter((t) => now - t <= FPS_WINDOW_MS);
    const span = (answered[answered.length - 1] - answered[0]) / 1000;
    const fps = answered.length > 1 && span > 0 ? (answered.length - 1) / span : 0;
    const n = result.tracks.length;
    say(`Live: ${fps.toFixed(1)} frames/s, ${n} ${n === 1 ? "person" : "people"} tracked ` +
        `(server ${Math.round(result.server_ms)} ms per frame)`);
    els.panel.dataset.fps = fps.toFixed(2);
    els.panel.dataset.frames = String(Number(els.panel.dataset.frames || 0) + 1);
  }

  // ---- the tally of different people seen ---------------------------------------------------------
  function showTally(next, final) {
    tally = next;
    els.tally.hidden = false;
    els.tallyRows.textContent = "";
    const rows = [...next.rows, { band: "All", female: next.female, male: next.male, unknown: next.unknown,
      total: next.people }];
    rows.forEach((r) => {
      const row = document.createElement("tr");
      TALLY_COLUMNS.forEach((c) => {
        const cell = document.createElement(r.band === "All" && c === "band" ? "th" : "td");
        cell.textContent = String(r[c]);
        row.append(cell);
      });
      els.tallyRows.append(row);
    });
    const n = next.people;
    const who = `${n} different ${n === 1 ? "person" : "people"} seen`;
    const how = next.counted_by === "person" ? "re-identified people count once" : "each tracked person counts once";
    const off = next.reid === false && next.note ? ` ${next.note}.` : ""; // why re-identification is off
    els.tallyNote.textContent = (final ? `Final tally: ${who} (${how}).`
      : `${who}, ${next.open} in view (${how}; bands and genders of people in view may still change).`) + off;
    els.tally.dataset.people = String(n);
    els.tally.dataset.final = String(Boolean(final));
  }

  // After Stop: close the session, then fetch its final tally (open tracks' final answers included). A frame
  // still in work when the session closed finalises it when done: ask again until the tally says it ended.
  async function finalTally(key) {
    try {
      await fetch(`v1/live/sessions/${key}`, { method: "DELETE", headers: headers() });
      for (let attempt = 0; attempt < FINAL_TRIES; attempt += 1) {
        const resp = await fetch(`v1/live/sessions/${key}/tally`, { headers: headers() });
        if (!resp.ok) break;
        const last = await resp.json();
        if (last.ended || attempt === FINAL_TRIES - 1) {
          showTally(last, true);
          return;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    } catch (err) {
      console.error(err);
    }
    if (tally) showTally(tally, true); // the last tally the frames brought
  }

  els.tallyCsv.addEventListener("click", () => {
    if (!tally) return;
    const rows = [...tally.rows, { band: "all", female: tally.female, male: tally.male, unknown: tally.unknown,
      total: tally.people }];
    window.fdFiles.downloadCsv("live-tally.csv", TALLY_COLUMNS, rows);
  });
  els.tallyJson.addEventListener("click", () => {
    if (tally) window.fdFiles.downloadJson("live-tally.json", tally);
  });

  function grabFrame() {
    const { videoWidth: w, videoHeight: h } = els.video;
    if (!w || !h) return Promise.resolve(null);
    const scale = Math.min(1, FRAME_SIDE / Math.max(w, h));
    grab.width = Math.round(w * scale);
    grab.height = Math.round(h * scale);
    grab.getContext("2d").drawImage(els.video, 0, 0, grab.width, grab.height);
    return new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  }

  async function sendFrame(blob) {
    const t = ((performance.now() - startedAt) / 1000).toFixed(3);
    const resp = await fetch(`v1/live/sessions/${session}/frames?t=${t}`, {
      method: "POST", body: blob, headers: headers({ "Content-Type": "image/jpeg" }),
    });
    if (resp.status === 404) { // the session expired (the tab was in the background): start a new one
      await openSession();
      return null;
    }
    if (resp.status === 503 || resp.status === 409) {
      const wait = Number(resp.headers.get("Retry-After") || 1);
      say(`Server busy, retrying in ${wait} s…`);
      await new Promise((r) => setTimeout(r, 1000 * wait));
      return null;
    }
    if (!resp.ok) throw new Error(await errorText(resp));
    return resp.json();
  }

  async function loop() {
    while (running) {
      const blob = await grabFrame();
      if (!blob) {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const result = await sendFrame(blob);
      if (!running || !result) continue;
      draw(result);
      fillTable(result);
      showRate(result);
      showTally(result.tally, false);
    }
  }

  function stop(message) {
    running = false;
    if (session) finalTally(session);
    session = null;
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    els.video.srcObject = null;
    els.panel.hidden = true;
    if (message) els.status.textContent = message;
  }

  async function start() {
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false,
      });
    } catch (err) {
      els.status.textContent = `Camera not available: ${err.message || err.name}`;
      return;
    }
    // A camera unplugged (or its permission revoked) ends its track: say so instead of freezing.
    stream.getVideoTracks().forEach((track) => track.addEventListener("ended", () => {
      if (running) stop("The camera stopped (disconnected?). Live mode ended.");
    }));
    els.video.srcObject = stream;
    els.panel.hidden = false;
    els.panel.dataset.frames = "0";
    answered = [];
    say("Starting…");
    try {
      await openSession();
    } catch (err) {
      stop(`Live camera unavailable: ${err.message}`);
      return;
    }
    startedAt = performance.now();
    running = true;
    loop().catch((err) => stop(`Live camera stopped: ${err.message}`));
  }

  els.button.hidden = false;
  els.button.addEventListener("click", () => { if (!running) start(); });
  els.stop.addEventListener("click", () => stop("Live camera stopped."));
})();
