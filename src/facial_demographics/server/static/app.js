// Upload photos to /v1/analyze and draw the faces found over each photo. Plain JS, no dependencies,
// so the page works offline. Each photo is sent in its own request (the server batches them).
"use strict";

(() => {
  const KEY_STORAGE = "fd-api-key";
  const PARALLEL_UPLOADS = 3;
  const MAX_CANVAS_SIDE = 1600;
  const LABEL_LEVELS = 8; // label heights above or below a box tried before accepting an overlap
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
  let rejected = 0; // files refused since the queue last ran empty
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
    rejected += 1;
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

  // Reading order: rows from top to bottom (a face whose centre lies within the first face's height of a
  // row's top face joins that row), each row left to right. Returns indices into faces.
  function readingOrder(faces) {
    const centre = (f) => (f.box[1] + f.box[3]) / 2;
    const byTop = faces.map((_, i) => i).sort((a, b) => centre(faces[a]) - centre(faces[b]));
    const rows = [];
    byTop.forEach((i) => {
      const row = rows[rows.length - 1];
      const first = row && faces[row[0]];
      if (first && centre(faces[i]) - centre(first) < (first.box[3] - first.box[1]) / 2) row.push(i);
      else rows.push([i]);
    });
    return rows.flatMap((row) => row.sort((a, b) => faces[a].box[0] - faces[b].box[0]));
  }

  // Label spots around a box, nearest to "just above, left-aligned" first, all inside the canvas.
  // The same rule as annotate.layout_labels in Python, so saved and on-screen images agree.
  function labelCandidates([x1, y1, x2, y2], w, h, width, height) {
    w = Math.min(w, width);
    h = Math.min(h, height);
    const xs = [x1, x2 - w, (x1 + x2 - w) / 2];
    const ys = [];
    for (let k = 0; k < LABEL_LEVELS; k += 1) ys.push(y1 - h * (k + 1), y2 + h * k);
    const spots = [];
    ys.forEach((y) => xs.forEach((x, order) => {
      const cx = Math.min(Math.max(0, x), width - w);
      const cy = Math.min(Math.max(0, y), height - h);
      spots.push({ d: Math.abs(cy - (y1 - h)) + Math.abs(cx - x1) + order, rect: [cx, cy, cx + w, cy + h] });
    }));
    return spots.sort((a, b) => a.d - b.d).map((s) => s.rect);
  }

  function overlap(a, b) {
    const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
    const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
    return Math.max(0, w) * Math.max(0, h);
  }

  // One label rectangle per box, inside the canvas and off the labels placed before it.
  function layoutLabels(boxes, sizes, width, height) {
    const placed = [];
    boxes.forEach((box, i) => {
      const candidates = labelCandidates(box, sizes[i][0], sizes[i][1], width, height);
      const cost = (c) => placed.reduce((sum, p) => sum + overlap(c, p), 0);
      placed.push(candidates.find((c) => cost(c) === 0) || candidates.reduce((a, b) => (cost(b) < cost(a) ? b : a)));
    });
    return placed;
  }

  // Draw the photo at its natural size (at most MAX_CANVAS_SIDE), then every face box, then the labels,
  // numbered in reading order (the table uses the same numbers and colours).
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
    const order = readingOrder(result.faces);
    const boxes = order.map((i) => {
      const [x1, y1, x2, y2] = result.faces[i].box;
      return [x1 * sx, y1 * sy, x2 * sx, y2 * sy];
    });
    const texts = order.map((i, n) => faceLabel(result.faces[i], n));
    boxes.forEach(([x1, y1, x2, y2], n) => {
      ctx.lineWidth = n === highlight ? line * 2 : line;
      ctx.strokeStyle = PALETTE[n % PALETTE.length];
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    });
    const sizes = texts.map((text) => [ctx.measureText(text).width + 8, fontSize + 6]);
    const rects = layoutLabels(boxes, sizes, canvas.width, canvas.height);
    rects.forEach(([lx1, ly1, lx2, ly2], n) => {
      ctx.fillStyle = PALETTE[n % PALETTE.length];
      ctx.fillRect(lx1, ly1, lx2 - lx1, ly2 - ly1);
      ctx.fillStyle = "#fff";
      ctx.fillText(texts[n], lx1 + 4, ly1 + 3);
    });
    // Where each numbered label went, for tests and anyone inspecting the page.
    canvas.dataset.labels = JSON.stringify(rects.map((rect, n) => ({ n: n + 1, box: boxes[n], rect })));
  }

  function fillTable(card, result, redraw) {
    const body = card.querySelector("tbody");
    readingOrder(result.faces).forEach((faceIndex, i) => {
      const face = result.faces[faceIndex];
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
          if (active || waiting.length) setStatus(`Analysing… ${active + waiting.length} left`);
          else setStatus(rejected ? `Done, ${rejected} rejected` : "Done.");
          pump();
        });
    }
  }

  function addFiles(files) {
    const list = Array.from(files || []);
    if (!list.length) return;
    if (!active && !waiting.length) rejected = 0;
    waiting.push(...list);
    setStatus(`Analysing… ${active + waiting.length} left`);
    pump();
  }

  els.input.addEventListener("change", () => {
    addFiles(els.input.files);
    els.input.value = "";
  });
  // dragenter/dragleave also fire when the pointer crosses the zone's children: count them, so the
  // highlight stays on until the pointer really leaves.
  let dragDepth = 0;
  els.drop.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    els.drop.classList.add("dragging");
  });
  els.drop.addEventListener("dragover", (event) => event.preventDefault());
  els.drop.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) els.drop.classList.remove("dragging");
  });
  els.drop.addEventListener("drop", () => {
    dragDepth = 0;
    els.drop.classList.remove("dragging");
  });
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
