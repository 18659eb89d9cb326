// Upload photos to /v1/analyze and draw the faces found over each photo. Plain JS, no dependencies,
// so the page works offline. Each photo is sent in its own request (the server batches them).
"use strict";

(() => {
  const KEY_STORAGE = "fd-api-key";
  const PARALLEL_UPLOADS = 3;
  const MAX_CANVAS_SIDE = 1600;
  const PALETTE = ["#e11d48", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop-zone"), input: $("file-input"), results: $("results"), status: $("status"),
    model: $("model-info"), template: $("card-template"),
    cameraButton: $("camera-button"), cameraPanel: $("camera-panel"), video: $("camera-video"),
    snap: $("snap-button"), cameraClose: $("camera-close"),
    keyForm: $("key-form"), keyInput: $("key-input"),
  };

  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
  let active = 0;
  const waiting = [];

  function authHeaders() {
    return apiKey ? { "X-API-Key": apiKey } : {};
  }

  function setStatus(text) {
    els.status.textContent = text;
  }

  // ---- model info and API key -------------------------------------------------------------------
  async function loadModelInfo() {
    try {
      const resp = await fetch("v1/model", { headers: authHeaders() });
      if (resp.status === 401) {
        els.keyForm.hidden = false;
        return;
      }
      if (!resp.ok) return;
      const info = await resp.json();
      els.model.textContent = `Model: ${info.name || "unknown"} ${info.version || ""}`.trim();
    } catch (err) {
      els.model.textContent = "(server not reachable)";
    }
  }

  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = els.keyInput.value.trim();
    sessionStorage.setItem(KEY_STORAGE, apiKey);
    els.keyForm.hidden = true;
    setStatus("API key saved for this tab. Add your photos again.");
    loadModelInfo();
  });

  // ---- cards ------------------------------------------------------------------------------------
  function newCard(name) {
    const card = els.template.content.firstElementChild.cloneNode(true);
    card.querySelector(".card-title").textContent = name;
    setBadge(card, "analysing…", "pending");
    els.results.prepend(card);
    return card;
  }

  function setBadge(card, text, kind) {
    const badge = card.querySelector(".badge");
    badge.textContent = text;
    badge.className = `badge ${kind}`;
  }

  function showError(card, message, code) {
    const box = card.querySelector(".error-box");
    box.textContent = "";
    const strong = document.createElement("strong");
    strong.textContent = "Rejected: ";
    box.append(strong, message);
    if (code) {
      const small = document.createElement("span");
      small.className = "code";
      small.textContent = ` (${code})`;
      box.append(small);
    }
    box.hidden = false;
    card.classList.add("failed");
    setBadge(card, "error", "error");
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser cannot display this image"));
      img.src = url;
    });
  }

  function faceLabel(face, index) {
    const [low, high] = face.age_interval;
    let text = `#${index + 1} ${Math.round(face.age)} (${Math.round(low)}–${Math.round(high)})`;
    if (face.gender) text += ` · ${face.gender} ${Math.round(100 * face.gender_probability)}%`;
    return text;
  }

  // Draw the photo scaled into the canvas, then every face box with its label.
  function drawFaces(canvas, img, result, highlight, boxesDrawn) {
    const scale = Math.min(1, MAX_CANVAS_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    if (boxesDrawn) return;
    const sx = canvas.width / (result.width || img.naturalWidth);
    const sy = canvas.height / (result.height || img.naturalHeight);
    // Sizes in canvas pixels that stay readable however small the canvas is shown (phones).
    const shownWidth = canvas.getBoundingClientRect().width || canvas.width;
    const unit = Math.max(Math.max(canvas.width, canvas.height) / 640, canvas.width / shownWidth);
    const line = Math.max(2, Math.round(2 * unit));
    const fontSize = Math.max(12, Math.round(13 * unit));
    ctx.font = `600 ${fontSize}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    result.faces.forEach((face, i) => {
      const [x1, y1, x2, y2] = face.box;
      const colour = PALETTE[i % PALETTE.length];
      ctx.lineWidth = i === highlight ? line * 2 : line;
      ctx.strokeStyle = colour;
      ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      const text = faceLabel(face, i);
      const width = ctx.measureText(text).width + 8;
      const height = fontSize + 6;
      let ty = y1 * sy - height;
      if (ty < 0) ty = y2 * sy;
      const tx = Math.min(Math.max(0, x1 * sx - line / 2), Math.max(0, canvas.width - width));
      ctx.fillStyle = colour;
      ctx.fillRect(tx, ty, width, height);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, tx + 4, ty + 3);
    });
  }

  function fillTable(card, result, redraw) {
    const body = card.querySelector("tbody");
    result.faces.forEach((face, i) => {
      const row = document.createElement("tr");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = PALETTE[i % PALETTE.length];
      const cells = [
        String(i + 1),
        face.age.toFixed(1),
        `${face.age_interval[0].toFixed(0)}–${face.age_interval[1].toFixed(0)}`,
        face.age_group,
        face.gender || "–",
        face.gender_probability == null ? "–" : `${(100 * face.gender_probability).toFixed(0)}%`,
        face.score.toFixed(2),
      ];
      cells.forEach((value, col) => {
        const cell = document.createElement("td");
        if (col === 0) cell.append(swatch);
        cell.append(value);
        row.append(cell);
      });
      if (redraw) {
        row.addEventListener("mouseenter", () => redraw(i));
        row.addEventListener("mouseleave", () => redraw(-1));
      }
      body.append(row);
    });
    card.querySelector(".table-wrap").hidden = result.faces.length === 0;
    card.querySelector(".no-faces").hidden = result.faces.length !== 0;
  }

  async function analyse(file) {
    const card = newCard(file.name || "photo");
    const url = URL.createObjectURL(file);
    // Formats the browser cannot show (e.g. TIFF) are drawn by the server instead.
    const img = await loadImage(url).catch(() => null);
    const form = new FormData();
    form.append("file", file, file.name || "photo");
    let resp;
    let body = null;
    try {
      resp = await fetch(img ? "v1/analyze" : "v1/analyze?annotate=true", {
        method: "POST", body: form, headers: authHeaders(),
      });
      body = await resp.json().catch(() => null);
    } catch (err) {
      showError(card, `could not reach the server (${err.message})`, "network_error");
      URL.revokeObjectURL(url);
      return;
    }
    if (!resp.ok) {
      const error = (body && body.error) || {};
      if (resp.status === 401) els.keyForm.hidden = false;
      let message = error.message || `the server answered HTTP ${resp.status}`;
      const retry = resp.headers.get("Retry-After");
      if (resp.status === 503 && retry) message += ` (retry in ${retry} s)`;
      showError(card, message, error.code || `http_${resp.status}`);
      URL.revokeObjectURL(url);
      return;
    }
    const result = body.results[0];
    if (result.error) {
      showError(card, result.error, result.error_code);
      URL.revokeObjectURL(url);
      return;
    }
    const canvas = card.querySelector("canvas");
    const shown = img || (result.annotated_jpeg && (await loadImage(`data:image/jpeg;base64,${result.annotated_jpeg}`)));
    const boxesDrawn = !img;
    const redraw = (highlight) => drawFaces(canvas, shown, result, highlight, boxesDrawn);
    card.querySelector(".figure").hidden = false;
    redraw(-1);
    canvas.setAttribute("aria-label", `${file.name}: ${result.faces.length} face(s) found`);
    fillTable(card, result, boxesDrawn ? null : redraw);
    const n = result.faces.length;
    setBadge(card, `${n} face${n === 1 ? "" : "s"}`, "ok");
    URL.revokeObjectURL(url);
  }

  // ---- queueing a few uploads at a time ---------------------------------------------------------
  function pump() {
    while (active < PARALLEL_UPLOADS && waiting.length) {
      const file = waiting.shift();
      active += 1;
      analyse(file)
        .catch((err) => console.error(err))
        .finally(() => {
          active -= 1;
          setStatus(active || waiting.length ? `Analysing… ${active + waiting.length} left` : "Done.");
          pump();
        });
    }
  }

  function addFiles(files) {
    const list = Array.from(files || []);
    if (!list.length) return;
    waiting.push(...list);
    setStatus(`Analysing… ${active + waiting.length} left`);
    pump();
  }

  els.input.addEventListener("change", () => {
    addFiles(els.input.files);
    els.input.value = "";
  });
  ["dragenter", "dragover"].forEach((type) => els.drop.addEventListener(type, (event) => {
    event.preventDefault();
    els.drop.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => els.drop.addEventListener(type, () => {
    els.drop.classList.remove("dragging");
  }));
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    addFiles(event.dataTransfer && event.dataTransfer.files);
  });
  document.addEventListener("paste", (event) => {
    if (event.clipboardData && event.clipboardData.files.length) addFiles(event.clipboardData.files);
  });

  // ---- webcam snapshot (only where the browser offers getUserMedia) -----------------------------
  let stream = null;

  function closeCamera() {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    els.video.srcObject = null;
    els.cameraPanel.hidden = true;
  }

  if (navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === "function") {
    els.cameraButton.hidden = false;
    els.cameraButton.addEventListener("click", async () => {
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
        els.video.srcObject = stream;
        els.cameraPanel.hidden = false;
      } catch (err) {
        setStatus(`Camera not available: ${err.message || err.name}`);
      }
    });
    els.cameraClose.addEventListener("click", closeCamera);
    els.snap.addEventListener("click", () => {
      const { videoWidth: w, videoHeight: h } = els.video;
      if (!w || !h) return;
      const canvas = document.createElement("canvas");
      canvas.width = w;
      canvas.height = h;
      canvas.getContext("2d").drawImage(els.video, 0, 0, w, h);
      canvas.toBlob((blob) => {
        if (!blob) return;
        const stamp = new Date().toISOString().replace(/[:.]/g, "-");
        addFiles([new File([blob], `webcam-${stamp}.jpg`, { type: "image/jpeg" })]);
      }, "image/jpeg", 0.92);
    });
  }

  loadModelInfo();
})();
