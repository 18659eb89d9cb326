// Upload photos to /v1/analyze and draw the faces found over each photo. Plain JS, no dependencies,
// so the page works offline. Each photo is sent in its own request (the server batches them); when all
// are in, the results go to /v1/summary/results for the population summary of every photo on the page
// (asked again, without uploading anything, when the age bands change). The face filters (min face, min
// score) go with each photo's request; when they change, the photos on the page are analysed again.
"use strict";

(() => {
  const KEY_STORAGE = "fd-api-key";
  const PARALLEL_UPLOADS = 3;
  const MAX_CANVAS_SIDE = 1600;
  const LABEL_LEVELS = 8; // label heights above or below a box tried before accepting an overlap
  const PALETTE = ["#e11d48", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
  const INTERVAL = 0.9;
  // analyze's CSV columns (facial_demographics.output.CSV_FIELDS) and summarize's (population.report).
  const FACE_COLUMNS = ["path", "width", "height", "face", "x1", "y1", "x2", "y2", "score", "age", "age_low",
    "age_high", "age_group", "gender", "gender_probability", "p_female", "error"];
  const SUMMARY_COLUMNS = ["group", "band", "gender", "share", "low", "high", "count"];

  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop-zone"), input: $("file-input"), results: $("results"), status: $("status"),
    model: $("model-info"), template: $("card-template"),
    cameraButton: $("camera-button"), cameraPanel: $("camera-panel"), video: $("camera-video"),
    snap: $("snap-button"), cameraClose: $("camera-close"),
    keyForm: $("key-form"), keyInput: $("key-input"),
    bandsForm: $("bands-form"), bands: $("bands-input"), bar: $("batch-bar"), clear: $("clear-button"),
    minFace: $("min-face-input"), minScore: $("min-score-input"),
    facesCsv: $("faces-csv"), facesJson: $("faces-json"), summaryCsv: $("summary-csv"), summaryJson: $("summary-json"),
    summary: $("summary"), summaryNote: $("summary-note"), summaryError: $("summary-error"),
    summaryBody: $("summary-body"), pyramid: $("pyramid"),
  };

  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
  let active = 0;
  let rejected = 0; // files refused since the queue last ran empty
  const waiting = [];
  // Every photo's result on the page, in the order added (null while in work); Clear starts a new batch, and
  // answers that arrive for an older batch are dropped.
  let records = [];
  let files = []; // the photo of each record, so that other face filters can analyse it again
  let filterUsed = ""; // the face filters (a query string) the photos on the page were analysed with
  let batch = 0;
  let summary = null;
  let asked = 0; // summary requests made: only the latest one's answer is shown

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

  // What a photo that could not be analysed contributes: counted as unreadable in the summary.
  function failure(name, message, code) {
    return { path: name, width: null, height: null, faces: [], error: message, error_code: code };
  }

  // The face filters as query parameters; empty fields are left out (the server's default keeps every face),
  // anything else is sent as typed: the server checks it, and a bad value is explained on each photo's card.
  function filterQuery() {
    const params = new URLSearchParams();
    const minFace = els.minFace.value.trim();
    const minScore = els.minScore.value.trim();
    if (minFace) params.set("min_face", minFace);
    if (minScore) params.set("min_score", minScore);
    return params.toString();
  }

  // Analyse one photo into its card; resolves to its result (or failure) record.
  async function analyse(file, filters) {
    const name = file.name || "photo";
    const card = newCard(name);
    const url = URL.createObjectURL(file);
    // Formats the browser cannot show (e.g. TIFF) are drawn by the server instead.
    const img = await loadImage(url).catch(() => null);
    const form = new FormData();
    form.append("file", file, file.name || "photo");
    const params = new URLSearchParams(filters);
    if (!img) params.set("annotate", "true");
    const query = params.toString();
    let resp;
    let body = null;
    try {
      resp = await fetch(query ? `v1/analyze?${query}` : "v1/analyze", {
        method: "POST", body: form, headers: authHeaders(),
      });
      body = await resp.json().catch(() => null);
    } catch (err) {
      const message = `could not reach the server (${err.message})`;
      showError(card, message, "network_error");
      URL.revokeObjectURL(url);
      return failure(name, message, "network_error");
    }
    if (!resp.ok) {
      const error = (body && body.error) || {};
      if (resp.status === 401) els.keyForm.hidden = false;
      let message = error.message || `the server answered HTTP ${resp.status}`;
      const retry = resp.headers.get("Retry-After");
      if (resp.status === 503 && retry) message += ` (retry in ${retry} s)`;
      showError(card, message, error.code || `http_${resp.status}`);
      URL.revokeObjectURL(url);
      return failure(name, message, error.code || `http_${resp.status}`);
    }
    const result = body.results[0];
    if (result.error) {
      showError(card, result.error, result.error_code);
      URL.revokeObjectURL(url);
      return result;
    }
    const canvas = card.querySelector("canvas");
    const shown = img || (result.annotated_jpeg && (await loadImage(`data:image/jpeg;base64,${result.annotated_jpeg}`)));
    const boxesDrawn = !img;
    delete result.annotated_jpeg; // decoded into `shown`: not kept in the records
    const redraw = (highlight) => drawFaces(canvas, shown, result, highlight, boxesDrawn);
    card.querySelector(".figure").hidden = false;
    redraw(-1);
    canvas.setAttribute("aria-label", `${file.name}: ${result.faces.length} face(s) found`);
    fillTable(card, result, boxesDrawn ? null : redraw);
    const n = result.faces.length;
    const out = result.filtered ? ` · ${result.filtered} left out` : "";
    setBadge(card, `${n} face${n === 1 ? "" : "s"}${out}`, "ok");
    if (!n && result.filtered) {
      card.querySelector(".no-faces").textContent =
        `No faces kept: ${result.filtered} left out by the face filters (min face, min score).`;
    }
    URL.revokeObjectURL(url);
    return result;
  }

  // ---- queueing a few uploads at a time ---------------------------------------------------------
  function pump() {
    while (active < PARALLEL_UPLOADS && waiting.length) {
      const { file, slot } = waiting.shift();
      const mine = batch;
      active += 1;
      analyse(file, filterUsed)
        .catch((err) => {
          console.error(err);
          return failure(file.name || "photo", `the page failed: ${err.message}`, "page_error");
        })
        .then((record) => {
          if (mine === batch) records[slot] = record;
        })
        .finally(() => {
          active -= 1;
          if (mine === batch) {
            const left = records.filter((r) => r === null).length;
            if (left) setStatus(`Analysing… ${left} left`);
            else {
              setStatus(rejected ? `Done, ${rejected} rejected` : "Done.");
              requestSummary();
            }
          }
          pump();
        });
    }
  }

  function queue(list) {
    if (!records.some((r) => r === null)) rejected = 0;
    list.forEach((file) => {
      waiting.push({ file, slot: records.length });
      records.push(null);
      files.push(file);
    });
    els.bar.hidden = false;
    setStatus(`Analysing… ${records.filter((r) => r === null).length} left`);
    pump();
  }

  // When the face filters are not those the photos on the page were analysed with, analyse them all again
  // (a new batch: their cards, results and summary are replaced). True when it did.
  function refilter() {
    const now = filterQuery();
    if (now === filterUsed) return false;
    filterUsed = now;
    if (!files.length) return false;
    const again = files.slice();
    clearAll();
    queue(again);
    return true;
  }

  function addFiles(chosen) {
    const list = Array.from(chosen || []);
    if (!list.length) return;
    refilter();
    queue(list);
  }

  // ---- population summary of every photo on the page --------------------------------------------
  const pct = (v) => `${(100 * v).toFixed(1)}%`;
  const span = (row) => `${(100 * row.low).toFixed(1)}–${(100 * row.high).toFixed(1)}%`;

  // Only what the summary reads: a face's age distribution and gender (keeps the request small).
  function summaryInput(record) {
    return {
      path: record.path,
      error: record.error || null,
      faces: record.error ? [] : record.faces.map((f) => ({
        age_distribution: f.age_distribution, gender: f.gender, gender_probability: f.gender_probability,
      })),
    };
  }

  function showSummaryError(message) {
    els.summaryError.textContent = message;
    els.summaryError.hidden = false;
    els.summaryBody.hidden = true;
    els.summaryNote.textContent = "";
    summary = null;
    els.summaryCsv.disabled = els.summaryJson.disabled = true;
  }

  async function requestSummary() {
    const done = records.filter((r) => r !== null);
    if (!done.length || done.length !== records.length) return; // asked again when the last photo is in
    const mine = ++asked;
    const filtered = done.reduce((sum, r) => sum + (r.filtered || 0), 0);
    els.summary.hidden = false;
    els.summaryNote.textContent = "Estimating…";
    const params = new URLSearchParams({ bands: els.bands.value.trim(), interval: String(INTERVAL) });
    let resp;
    let body = null;
    try {
      resp = await fetch(`v1/summary/results?${params}`, {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
        body: JSON.stringify({ results: done.map(summaryInput) }),
      });
      body = await resp.json().catch(() => null);
    } catch (err) {
      if (mine === asked) showSummaryError(`Summary failed: could not reach the server (${err.message})`);
      return;
    }
    if (mine !== asked) return; // a newer request (other bands, more photos, Clear) has been made
    if (!resp.ok) {
      const error = (body && body.error) || {};
      showSummaryError(`Summary failed: ${error.message || `the server answered HTTP ${resp.status}`}`);
      return;
    }
    showSummary(body.summary, filtered);
  }

  // `filtered`: the faces the face filters left out of the photos summarised (not counted in the summary).
  function showSummary(result, filtered) {
    summary = result;
    els.summaryError.hidden = true;
    els.summaryBody.hidden = false;
    els.summaryCsv.disabled = els.summaryJson.disabled = false;
    const unreadable = result.errors ? `, ${result.errors} unreadable` : "";
    const empty = result.no_face ? `, ${result.no_face} without a face` : "";
    els.summaryNote.textContent = `${result.faces} face${result.faces === 1 ? "" : "s"} in ${result.images} ` +
      `photo${result.images === 1 ? "" : "s"}${unreadable}${empty} · ${Math.round(100 * result.interval)}% ` +
      `intervals · method: ${result.method}` +
      (filtered ? ` · ${filtered} face${filtered === 1 ? "" : "s"} left out by the face filters` : "");
    els.summary.dataset.faces = String(result.faces);
    fillRows($("summary-age"), result.age.map((r) => [r.band, pct(r.share), span(r), r.count.toFixed(1)]));
    fillRows($("summary-gender"), result.gender.map((r) => [r.gender, pct(r.share), span(r), r.count.toFixed(1)]));
    const cells = result.bands.map((band) => {
      const of = (g) => result.age_gender.find((r) => r.band === band && r.gender === g);
      const [f, m] = [of("female"), of("male")];
      return f && m ? [band, pct(f.share), span(f), f.count.toFixed(1), pct(m.share), span(m), m.count.toFixed(1)]
        : [band, "–", "–", "–", "–", "–", "–"];
    });
    fillRows($("summary-cells"), cells);
    drawPyramid(els.pyramid, result);
  }

  function fillRows(table, rows) {
    const body = table.querySelector("tbody");
    body.textContent = "";
    rows.forEach((values) => {
      const row = document.createElement("tr");
      values.forEach((value) => {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      });
      body.append(row);
    });
    table.closest(".table-wrap").hidden = rows.length === 0;
  }

  // ---- the population pyramid, as inline SVG ---------------------------------------------------
  const PYR = { width: 640, row: 26, top: 28, bottom: 30, centre: 72, margin: 28 }; // margin: room for tick text

  function svg(parent, name, attrs, text) {
    // The namespace comes from the page's own <svg>, so no URL is written here (the page works offline).
    const node = document.createElementNS(els.pyramid.namespaceURI, name);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, String(v)));
    if (text !== undefined) node.textContent = text;
    parent.append(node);
    return node;
  }

  // One side's bar and whisker for a band: sign -1 grows left of the centre column (men), +1 right (women).
  function bar(root, row, y, sign, scale, kind, what) {
    const { width, centre, row: h } = PYR;
    const origin = width / 2 + (sign * centre) / 2;
    const at = (v) => origin + sign * v * scale;
    const x = Math.min(at(0), at(row.share));
    const rect = svg(root, "rect", { x, y: y + 4, width: Math.abs(at(row.share) - at(0)), height: h - 8,
      class: `bar ${kind}`, "data-band": row.band, "data-share": row.share });
    svg(rect, "title", {}, `${what} ${row.band}: ${pct(row.share)} (${span(row)}), ≈ ${row.count.toFixed(1)} faces`);
    const mid = y + h / 2;
    svg(root, "line", { x1: at(row.low), x2: at(row.high), y1: mid, y2: mid, class: "whisker" });
    [row.low, row.high].forEach((v) => svg(root, "line", { x1: at(v), x2: at(v), y1: mid - 5, y2: mid + 5,
      class: "whisker" }));
  }

  function drawPyramid(root, result) {
    const { width, row: h, top, bottom, centre, margin } = PYR;
    root.querySelectorAll(":scope > :not(title)").forEach((node) => node.remove());
    const bands = result.bands;
    const height = top + bands.length * h + bottom;
    root.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const split = result.age_gender.length > 0;
    const rows = split ? result.age_gender : result.age;
    const most = Math.max(0.01, ...rows.map((r) => Math.max(r.high, r.share)));
    const scale = (width / 2 - centre / 2 - margin) / most;
    bands.forEach((band, b) => {
      const y = top + (bands.length - 1 - b) * h; // youngest at the bottom
      svg(root, "text", { x: width / 2, y: y + h / 2, class: "band" }, band);
      if (split) {
        const of = (g) => result.age_gender.find((r) => r.band === band && r.gender === g);
        bar(root, of("male"), y, -1, scale, "male", "men");
        bar(root, of("female"), y, 1, scale, "female", "women");
      } else {
        bar(root, result.age[b], y, 1, scale, "all", "all");
      }
    });
    if (split) {
      svg(root, "text", { x: 4, y: top / 2, class: "side male" }, "Men");
      svg(root, "text", { x: width - 4, y: top / 2, class: "side female end" }, "Women");
    }
    const axis = top + bands.length * h + bottom / 2;
    [-1, 1].forEach((sign) => {
      if (!split && sign < 0) return;
      const origin = width / 2 + (sign * centre) / 2;
      [0, most / 2, most].forEach((v) => svg(root, "text", { x: origin + sign * v * scale, y: axis,
        class: "tick" }, pct(v)));
    });
    root.dataset.bands = String(bands.length);
    root.setAttribute("aria-label", `Population pyramid of ${result.faces} faces in ${bands.length} age bands`);
  }

  // ---- downloads and Clear ----------------------------------------------------------------------
  function finished() {
    return records.filter((r) => r !== null);
  }

  function faceRows(record) {
    const base = { path: record.path, width: record.width, height: record.height, error: record.error };
    if (!record.faces.length) return [base];
    return record.faces.map((f, i) => {
      const pf = f.gender == null || f.gender_probability == null ? null
        : Math.round(10000 * (f.gender === "female" ? f.gender_probability : 1 - f.gender_probability)) / 10000;
      const [x1, y1, x2, y2] = f.box;
      return Object.assign({}, base, { face: i, x1, y1, x2, y2, score: f.score, age: f.age,
        age_low: f.age_interval[0], age_high: f.age_interval[1], age_group: f.age_group, gender: f.gender,
        gender_probability: f.gender_probability, p_female: pf });
    });
  }

  function summaryRows(result) {
    const numbers = (r) => ({ share: r.share, low: r.low, high: r.high, count: r.count });
    return [
      ...result.age.map((r) => Object.assign({ group: "age", band: r.band, gender: "" }, numbers(r))),
      ...result.gender.map((r) => Object.assign({ group: "gender", band: "", gender: r.gender }, numbers(r))),
      ...result.age_gender.map((r) => Object.assign({ group: "age_gender", band: r.band, gender: r.gender },
        numbers(r))),
    ];
  }

  els.facesCsv.addEventListener("click", () => {
    window.fdFiles.downloadCsv("faces.csv", FACE_COLUMNS, finished().flatMap(faceRows));
  });
  // The same records as `analyze --format json` (plus error_code): `summarize` reads this file.
  els.facesJson.addEventListener("click", () => window.fdFiles.downloadJson("faces.json", finished()));
  els.summaryCsv.addEventListener("click", () => {
    if (summary) window.fdFiles.downloadCsv("summary.csv", SUMMARY_COLUMNS, summaryRows(summary));
  });
  els.summaryJson.addEventListener("click", () => {
    if (summary) window.fdFiles.downloadJson("summary.json", summary);
  });

  function clearAll() {
    batch += 1;
    asked += 1; // drop the answer to a summary request still in flight
    waiting.length = 0;
    records = [];
    files = [];
    summary = null;
    rejected = 0;
    els.results.textContent = "";
    els.input.value = "";
    els.summary.hidden = true;
    els.summaryBody.hidden = true;
    els.summaryError.hidden = true;
    els.summaryNote.textContent = "";
    delete els.summary.dataset.faces;
    els.summaryCsv.disabled = els.summaryJson.disabled = true;
    els.bar.hidden = true;
    setStatus("");
  }

  els.clear.addEventListener("click", clearAll);
  els.bandsForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!refilter()) requestSummary(); // other filters: the summary comes when the photos are in again
  });

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
