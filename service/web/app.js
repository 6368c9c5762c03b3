// The demo page of fer-service: plain JavaScript over the public REST API, no build step.
// Every request is relative to the page, so the page works wherever the gateway is served.
"use strict";

// The colours of service/drawing.py, so that the page and `classify --draw` read alike.
const COLOURS = {
  angry: "#e6194b", disgust: "#3cb44b", fear: "#911eb4", happy: "#ffd60a",
  sad: "#4363d8", surprise: "#f58231", neutral: "#9a9a9a",
};
const OTHER = "#00b8d9";
const SVG = "http://www.w3.org/2000/svg";
const WEBCAM_INTERVAL_MS = 250; // at most 4 frames a second, one request at a time
const JOB_POLL_MS = 500;
const JOB_TIMEOUT_MS = 180000;

const $ = (id) => document.getElementById(id);
let models = [];
let webcam = null; // {stream, timer} while the webcam runs

// -- errors: the problem+json document's title and detail ----------------------------------

class ApiError extends Error {
  constructor(problem) {
    super(`${problem.title}: ${problem.detail}`);
    this.problem = problem;
  }
}

async function problemOf(response) {
  try {
    const body = await response.json();
    if (body && body.title) return body;
  } catch (_) { /* not JSON: described below */ }
  return { title: `${response.status} ${response.statusText}`, detail: "the server's answer is not a problem document" };
}

function showError(error) {
  const problem = error instanceof ApiError ? error.problem
    : { title: "Request failed", detail: String(error.message || error) };
  $("error-title").textContent = problem.title;
  $("error-detail").textContent = problem.detail || "";
  $("error").hidden = false;
}

function clearError() { $("error").hidden = true; }

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) throw new ApiError(await problemOf(response));
  return response;
}

// -- models ----------------------------------------------------------------------------------

async function loadModels() {
  const list = await (await api("models")).json();
  models = list.models;
  const select = $("model");
  select.replaceChildren();
  for (const m of models.filter((m) => m.kind === "classifier" || m.kind === "derl")) {
    const option = new Option(`${m.name} ${m.version}${m.ready ? "" : " (not ready)"}`, m.name);
    option.dataset.kind = m.kind;
    option.selected = m.name === list.default;
    select.append(option);
  }
  updateNeutralOption();
  $("transfer-missing").hidden = models.some((m) => m.kind === "transfer");
  // Frontalization (its tab, and frontalize-then-classify) only where the gateway has such a model.
  const frontalizer = models.some((m) => m.kind === "frontalizer");
  document.querySelector('[data-tab="frontalize"]').hidden = !frontalizer;
  $("frontalize-option").hidden = !frontalizer;
  if (!frontalizer) $("frontalize-faces").checked = false;
}

function updateNeutralOption() {
  const option = $("model").selectedOptions[0];
  const derl = option !== undefined && option.dataset.kind === "derl";
  $("neutral").disabled = !derl;
  if (!derl) $("neutral").checked = false;
  $("neutral-option").classList.toggle("disabled", !derl);
}

// -- classify --------------------------------------------------------------------------------

function classifyUrl(neutral) {
  const params = new URLSearchParams();
  if ($("model").value) params.set("model", $("model").value);
  if (neutral && $("neutral").checked) params.set("neutral", "true");
  if ($("frontalize-faces").checked) {
    params.set("frontalize", "true");
    const minYaw = $("frontalize-min-yaw").value;
    if (minYaw !== "") params.set("frontalize_min_yaw", minYaw);
  }
  return `classify?${params}`;
}

async function classify(blob, neutral = true) {
  const form = new FormData();
  form.append("image", blob, blob.name || "photo");
  return (await api(classifyUrl(neutral), { method: "POST", body: form })).json();
}

async function classifyPhoto(file) {
  if (!file) return;
  stopWebcam();
  clearError();
  const image = $("image");
  const url = URL.createObjectURL(file);
  image.src = url;
  image.hidden = false;
  $("video").hidden = true;
  drawFaces({ width: 1, height: 1 }, []);
  $("faces").replaceChildren();
  $("summary").textContent = "Classifying…";
  try {
    const answer = await classify(file);
    // Coordinates are those of the upright image (EXIF orientation applied), which is also
    // how browsers show a photo (`image-orientation: from-image`).
    drawFaces(answer.image, answer.faces);
    listFaces(answer.faces);
    $("summary").textContent = `${answer.faces.length} face(s) · ${answer.model.name} ${answer.model.version}`
      + ` · ${answer.image.width}×${answer.image.height} ${answer.image.format}`;
  } catch (error) {
    $("summary").textContent = "";
    showError(error);
  }
}

function label(face) {
  return `${face.expression} ${Math.round(100 * (face.probabilities[face.expression] || 0))}%`;
}

function svgElement(name, attributes, parent) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  parent.append(element);
  return element;
}

// Boxes, landmarks and labels on an SVG whose viewBox is the image's pixel grid.
function drawFaces(size, faces) {
  const svg = $("overlay");
  svg.setAttribute("viewBox", `0 0 ${size.width} ${size.height}`);
  svg.replaceChildren();
  const line = Math.max(2, size.width / 300);
  const fontSize = Math.max(11, Math.max(size.width, size.height) / 50);
  faces.forEach((face, i) => {
    const colour = COLOURS[face.expression] || OTHER;
    const g = svgElement("g", { class: "face", "data-index": i, "data-expression": face.expression }, svg);
    const b = face.box;
    svgElement("rect", { class: "box", x: b.x, y: b.y, width: b.width, height: b.height,
      stroke: colour, "stroke-width": line, fill: "none" }, g);
    for (const p of Object.values(face.landmarks)) {
      svgElement("circle", { class: "landmark", cx: p.x, cy: p.y, r: line * 1.5, fill: colour }, g);
    }
    const y = b.y - fontSize * 1.3 >= 0 ? b.y - fontSize * 1.3 : b.y + b.height;
    const tag = svgElement("rect", { class: "tag", x: b.x, y, height: fontSize * 1.3, fill: colour }, g);
    const text = svgElement("text", { class: "label", x: b.x + line, y: y + fontSize, "font-size": fontSize }, g);
    text.textContent = `${i + 1} ${label(face)}`;
    tag.setAttribute("width", text.getComputedTextLength() + 2 * line);
  });
}

// One card per face: the 7 probabilities as bars, and the neutral face when asked for.
function listFaces(faces) {
  const list = $("faces");
  list.replaceChildren();
  faces.forEach((face) => {
    const item = document.createElement("li");
    item.className = "face";
    item.dataset.expression = face.expression;
    const title = document.createElement("h3");
    title.textContent = label(face);
    item.append(title);
    // The head's estimated yaw, and whether its frontal view is what was classified.
    const pose = document.createElement("p");
    pose.className = "pose";
    pose.textContent = `yaw ${Math.round(face.yaw)}°${face.frontalized ? " · frontalized" : ""}`;
    pose.dataset.frontalized = String(Boolean(face.frontalized));
    item.append(pose);
    for (const [name, p] of Object.entries(face.probabilities)) {
      const row = document.createElement("div");
      row.className = "bar";
      row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>`;
      row.querySelector(".name").textContent = name;
      row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      row.querySelector(".fill").style.background = COLOURS[name] || OTHER;
      row.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
      item.append(row);
    }
    if (face.neutral_face) {
      const neutral = document.createElement("img");
      neutral.className = "neutral";
      neutral.alt = "the neutral face (DeRL)";
      neutral.title = neutral.alt;
      neutral.src = `data:image/png;base64,${face.neutral_face}`;
      item.append(neutral);
    }
    list.append(item);
  });
}

// -- webcam: a few frames a second, live boxes over the video --------------------------------

async function startWebcam() {
  if (webcam) { stopWebcam(); return; }
  clearError();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError(new Error("this browser gives no camera here (it needs https or localhost)"));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    showError(new Error(`no camera: ${error.message || error.name}`));
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("image").hidden = true;
  $("faces").replaceChildren();
  $("webcam").textContent = "Stop webcam";
  const canvas = document.createElement("canvas");
  let busy = false;
  const tick = async () => {
    if (busy || !video.videoWidth) return;
    busy = true;
    try {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const frame = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.8));
      const started = performance.now();
      const answer = await classify(frame, false);
      if (!webcam) return; // stopped while the frame was on its way
      drawFaces(answer.image, answer.faces);
      listFaces(answer.faces);
      $("summary").textContent = `${answer.faces.length} face(s) · ${Math.round(performance.now() - started)} ms`;
    } catch (error) {
      showError(error);
      stopWebcam();
    } finally {
      busy = false;
    }
  };
  webcam = { stream, timer: setInterval(tick, WEBCAM_INTERVAL_MS) };
}

function stopWebcam() {
  if (!webcam) return;
  clearInterval(webcam.timer);
  for (const track of webcam.stream.getTracks()) track.stop();
  webcam = null;
  $("video").srcObject = null;
  $("webcam").textContent = "Webcam";
}

// -- queued jobs: transfer and frontalize ----------------------------------------------------

function jobView(container) {
  container.replaceChildren();
  const status = document.createElement("p");
  status.className = "status";
  const progress = document.createElement("progress");
  container.append(status, progress);
  return { status, progress };
}

async function runJob(path, form, container) {
  clearError();
  const view = jobView(container);
  view.status.textContent = "Uploading…";
  try {
    let job = await (await api(path, { method: "POST", body: new FormData(form) })).json();
    const started = Date.now();
    while (job.status === "queued" || job.status === "running") {
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      view.status.textContent = `Job ${job.id.slice(0, 8)}: ${job.status} (attempt ${job.attempts}, ${seconds} s)`;
      if (Date.now() - started > JOB_TIMEOUT_MS) throw new Error(`the job is still ${job.status} after ${JOB_TIMEOUT_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
      job = await (await api(`jobs/${job.id}`)).json();
    }
    view.progress.remove();
    if (job.status === "failed") throw new ApiError(job.error || { title: "Job failed", detail: "no reason given" });
    const png = await (await api(`jobs/${job.id}/result`)).blob();
    view.status.textContent = `Job ${job.id.slice(0, 8)}: succeeded in ${((Date.now() - started) / 1000).toFixed(1)} s`;
    const image = document.createElement("img");
    image.className = "generated";
    image.alt = "the generated face";
    image.src = URL.createObjectURL(png);
    container.append(image);
  } catch (error) {
    view.progress.remove();
    view.status.textContent = "";
    showError(error);
  }
}

// -- wiring ----------------------------------------------------------------------------------

function showTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== name;
  if (name !== "classify") stopWebcam();
}

function firstImage(items) {
  for (const item of items) {
    const file = item.getAsFile ? item.getAsFile() : item;
    if (file && file.type.startsWith("image/")) return file;
  }
  return null;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("model").addEventListener("change", updateNeutralOption);
  $("photo").addEventListener("change", (e) => classifyPhoto(e.target.files[0]));
  $("webcam").addEventListener("click", startWebcam);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classifyPhoto(firstImage(e.dataTransfer.files));
  });
  document.addEventListener("paste", (e) => {
    const file = firstImage(e.clipboardData ? e.clipboardData.items : []);
    if (file) { showTab("classify"); classifyPhoto(file); }
  });
  for (const [name, path] of [["transfer", "transfer"], ["frontalize", "frontalize"]]) {
    $(`${name}-form`).addEventListener("submit", (e) => {
      e.preventDefault();
      runJob(path, e.target, $(`${name}-job`));
    });
  }
  loadModels().then(() => { document.body.dataset.ready = "true"; }, showError);
});
