// hoist serve's page: one streamed PUT of the chosen file (never read into
// memory), the upload's progress from the browser, each layer's from the
// server's event stream, and the result or the error with its hint.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null; // the XHR in flight

function human(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function duration(seconds) {
  if (!isFinite(seconds)) return "…";
  seconds = Math.round(seconds);
  return seconds >= 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s` : `${seconds} s`;
}

function shortId(id) {
  return String(id).replace(/^sha256:/, "").slice(0, 12);
}

// A progress id without crypto.randomUUID, which plain-HTTP pages lack.
function progressId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Basic credentials as UTF-8, which btoa alone cannot encode.
function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let text = "";
  bytes.forEach((b) => { text += String.fromCharCode(b); });
  return `Basic ${btoa(text)}`;
}

function show(id, visible) { $(id).hidden = !visible; }

function fail(message, hint) {
  $("error-message").textContent = message;
  $("error-hint").textContent = hint || "";
  $("error-hint").hidden = !hint;
  show("failure", true);
}

function busy(on) {
  $("push").disabled = on;
  $("cancel").hidden = !on;
  for (const id of ["file", "dest", "username", "password"]) $(id).disabled = on;
}

const layers = new Map();

function layerRow(id, label) {
  let row = layers.get(id);
  if (!row) {
    const li = document.createElement("li");
    const name = document.createElement("code");
    name.textContent = shortId(id);
    const bar = document.createElement("progress");
    bar.max = 1; bar.value = 0;
    bar.setAttribute("aria-label", `layer ${shortId(id)}`);
    const state = document.createElement("span");
    state.textContent = label || "";
    li.append(name, bar, state);
    $("layers").append(li);
    row = { li, bar, state };
    layers.set(id, row);
  }
  return row;
}

function onEvent(event) {
  switch (event.event) {
    case "start": {
      const row = layerRow(event.id, human(event.size));
      row.bar.max = Math.max(event.size, 1);
      break;
    }
    case "progress": {
      const row = layerRow(event.id);
      row.bar.max = Math.max(event.size, 1);
      row.bar.value = event.bytes;
      row.state.textContent = `${human(event.bytes)} / ${human(event.size)}`;
      break;
    }
    case "done": case "skipped": case "mounted": {
      const row = layerRow(event.id);
      row.bar.value = row.bar.max;
      row.state.textContent = { done: "pushed", skipped: "already there", mounted: "mounted" }[event.event];
      row.li.dataset.state = event.event;
      break;
    }
    case "manifest": {
      const li = document.createElement("li");
      li.textContent = `manifest ${event.reference}`;
      $("layers").append(li);
      break;
    }
    case "retry": {
      const li = document.createElement("li");
      li.textContent = `retrying ${event.action}: ${event.reason}`;
      $("layers").append(li);
      break;
    }
    default:
      break;
  }
}

function showResult(document_) {
  const list = $("pushed");
  list.replaceChildren();
  for (const image of document_.images || []) {
    const li = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = image.pushed;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", `copy ${image.pushed}`);
    copy.addEventListener("click", () => copyText(image.pushed, copy));
    li.append(code, copy);
    list.append(li);
  }
  show("result", (document_.images || []).length > 0);
}

function copyText(text, button) {
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text, done, button));
  } else {
    fallbackCopy(text, done, button);
  }
}

function fallbackCopy(text, done, button) {
  const area = document.createElement("textarea");
  area.value = text;
  document.body.append(area);
  area.select();
  let copied = false;
  try { copied = document.execCommand("copy"); } catch { copied = false; } finally { area.remove(); }
  if (copied) done(); else button.textContent = "Select and copy it";
}

function openEvents(id) {
  return new Promise((resolve) => {
    const source = new EventSource(`/api/events?id=${id}`);
    source.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch { return; }
      if (event.event === "end") { source.close(); return; }
      onEvent(event);
    };
    // Start the upload once the stream is open, or without it after a second.
    const timer = setTimeout(() => resolve(source), 1000);
    source.onopen = () => { clearTimeout(timer); resolve(source); };
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) { clearTimeout(timer); resolve(source); } };
  });
}

async function push(event) {
  event.preventDefault();
  show("failure", false);
  show("result", false);
  const file = $("file").files[0];
  const dest = $("dest").value.trim();
  if (!file) { fail("choose an archive first", "a file made by docker save, podman save, skopeo or an OCI exporter"); $("file").focus(); return; }
  if (!dest) { fail("the destination is empty", "write HOST/REPOSITORY:TAG, e.g. " + $("dest").placeholder); $("dest").focus(); return; }

  busy(true);
  const headers = { "X-Hoist-Page": "1" };
  const user = $("username").value;
  if (user) headers.Authorization = basic(user, $("password").value);
  // Ask first: a refusal (destination, size, credentials) is told before a byte of the file is sent.
  const query = `dest=${encodeURIComponent(dest)}`;
  try {
    const check = await fetch(`/api/check?${query}&size=${file.size}`, { method: "POST", headers });
    if (!check.ok) {
      let answer = null;
      try { answer = await check.json(); } catch { answer = null; }
      const error = answer && answer.error;
      fail(error ? error.message : `the service answered ${check.status}`, error ? error.hint : "check the service's log");
      busy(false);
      return;
    }
  } catch {
    fail("the service cannot be reached", "check the network, then push again");
    busy(false);
    return;
  }
  layers.clear();
  $("layers").replaceChildren();
  $("upload-bar").value = 0;
  $("upload-text").textContent = `starting: ${file.name}, ${human(file.size)}`;
  show("progress", true);

  const id = progressId();
  const source = await openEvents(id);
  const xhr = new XMLHttpRequest();
  current = xhr;
  const started = performance.now();
  xhr.open("PUT", `/api/push?${query}&progress=${id}`);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
  xhr.upload.onprogress = (progress) => {
    const total = progress.lengthComputable ? progress.total : file.size;
    const seconds = (performance.now() - started) / 1000;
    const rate = progress.loaded / Math.max(seconds, 0.001);
    $("upload-bar").max = Math.max(total, 1);
    $("upload-bar").value = progress.loaded;
    $("upload-text").textContent =
      `${human(progress.loaded)} of ${human(total)} sent, ${human(rate)}/s, ${duration((total - progress.loaded) / rate)} left`;
  };
  xhr.upload.onload = () => { $("upload-text").textContent = `${human(file.size)} sent; the registry is finishing`; };
  const finish = () => { busy(false); current = null; setTimeout(() => source.close(), 500); };
  xhr.onload = () => {
    finish();
    let answer = null;
    try { answer = JSON.parse(xhr.responseText); } catch { answer = null; }
    if (answer) showResult(answer);
    if (xhr.status === 200) {
      $("upload-text").textContent = `${human(file.size)} pushed in ${duration((performance.now() - started) / 1000)}`;
      return;
    }
    const error = answer && answer.error;
    fail(error ? error.message : `the service answered ${xhr.status} ${xhr.statusText}`,
      error ? error.hint : "check the service's log");
  };
  xhr.onerror = () => { finish(); fail("the connection to the service broke off", "check the network, then push again"); };
  xhr.onabort = () => {
    finish();
    fail("the upload was cancelled", "the service stops the push and tags nothing, unless the whole file had already arrived");
  };
  xhr.send(file);
}

function setupDrop() {
  const drop = $("drop");
  const over = (on) => (event) => { event.preventDefault(); drop.classList.toggle("over", on); };
  drop.addEventListener("dragenter", over(true));
  drop.addEventListener("dragover", over(true));
  drop.addEventListener("dragleave", over(false));
  drop.addEventListener("drop", (event) => {
    over(false)(event);
    if (event.dataTransfer && event.dataTransfer.files.length > 0) $("file").files = event.dataTransfer.files;
  });
}

async function loadRegistries() {
  try {
    const answer = await (await fetch("/api/registries")).json();
    const names = answer.registries || [];
    if (names.length > 0) {
      $("registries").textContent = names.join(", ");
      $("dest").placeholder = `${names[0]}/team/app:1.0`;
    }
  } catch {
    // The page works without the list; the service still checks.
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("push-form").addEventListener("submit", push);
  $("cancel").addEventListener("click", () => { if (current) current.abort(); });
  setupDrop();
  loadRegistries();
});
