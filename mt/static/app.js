// The page of `mt serve`: pick a language pair, type, read the translation,
// its alternatives and (for attention models) the attention heatmap.
"use strict";

const DEBOUNCE_MS = 400;
const $ = (id) => document.getElementById(id);

let languages = [];   // [{code, name, targets}] from /languages
let timer = null;     // the pending debounced translation
let inFlight = null;  // AbortController of the request under way
let latest = 0;       // number of the newest request: older answers are dropped

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) result.Authorization = "Bearer " + key;
  return result;
}

function showStatus(message, isError) {
  $("status").textContent = message;
  $("status").classList.toggle("error", Boolean(isError));
}

async function errorOf(response) {
  try {
    return (await response.json()).error || response.statusText;
  } catch (_) {
    return response.statusText;
  }
}

async function loadLanguages() {
  const [settings, response] = await Promise.all([fetch("/frontend/settings"), fetch("/languages")]);
  if (settings.ok && (await settings.json()).keyRequired) {
    $("key-row").hidden = false;
    if (!$("api-key").value.trim()) showStatus("This server needs an API key: enter it above.", true);
  }
  if (!response.ok) {
    showStatus("Could not load the languages: " + (await errorOf(response)), true);
    return;
  }
  languages = await response.json();
  const source = $("source");
  source.replaceChildren(...languages.filter((l) => l.targets.length).map((l) => new Option(l.name, l.code)));
  fillTargets();
  if ($("key-row").hidden || $("api-key").value.trim()) showStatus("");
}

function fillTargets() {
  const chosen = languages.find((l) => l.code === $("source").value);
  const names = Object.fromEntries(languages.map((l) => [l.code, l.name]));
  const targets = chosen ? chosen.targets : [];
  $("target").replaceChildren(...targets.map((code) => new Option(names[code] || code, code)));
  $("swap").disabled = !canSwap();
}

function canSwap() {
  const back = languages.find((l) => l.code === $("target").value);
  return Boolean(back && back.targets.includes($("source").value));
}

function swap() {
  if (!canSwap()) return;
  const [source, target] = [$("source").value, $("target").value];
  $("source").value = target;
  fillTargets();
  $("target").value = source;
  const translation = $("translation").textContent;
  if (translation) $("text").value = translation;
  translateNow();
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(translateNow, DEBOUNCE_MS);
}

async function translateNow() {
  clearTimeout(timer);
  const text = $("text").value;
  if (!text.trim() || !$("source").value || !$("target").value) {
    render(null);
    return;
  }
  if (inFlight) inFlight.abort();
  inFlight = new AbortController();
  const number = ++latest;
  const body = {
    q: text,
    source: $("source").value,
    target: $("target").value,
    format: "text",
    alternatives: Number($("alternatives").value),
    alignment: true,
  };
  showStatus("Translating…");
  try {
    const response = await fetch("/translate", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: inFlight.signal,
    });
    if (number !== latest) return;
    if (!response.ok) {
      showStatus(await errorOf(response), true);
      return;
    }
    render(await response.json());
    showStatus("");
  } catch (error) {
    if (error.name !== "AbortError" && number === latest) showStatus("The server did not answer: " + error.message, true);
  }
}

function render(result) {
  $("translation").textContent = result ? result.translatedText : "";
  const alternatives = (result && result.alternatives) || [];
  $("alternatives-list").replaceChildren(...alternatives.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
  $("alternatives-label").hidden = alternatives.length === 0;
  renderHeatmap(result && result.alignment);
}

function cell(tag, text, scope) {
  const element = document.createElement(tag);
  element.textContent = text;
  if (scope) element.scope = scope;
  return element;
}

// Rows: target pieces; columns: source pieces; shade: the attention weight.
function renderHeatmap(alignment) {
  const table = $("heatmap");
  $("alignment").hidden = !alignment;
  if (!alignment) {
    table.replaceChildren();
    return;
  }
  const head = document.createElement("thead");
  const top = document.createElement("tr");
  top.append(cell("td", ""), ...alignment.source.map((piece) => cell("th", piece, "col")));
  head.append(top);
  const rows = document.createElement("tbody");
  alignment.target.forEach((piece, t) => {
    const row = document.createElement("tr");
    row.append(cell("th", piece, "row"));
    alignment.weights[t].forEach((weight, s) => {
      const shade = document.createElement("td");
      shade.style.backgroundColor = `rgba(var(--heat), ${weight.toFixed(3)})`;
      shade.title = `${piece} ← ${alignment.source[s]}: ${weight.toFixed(2)}`;
      const label = cell("span", weight.toFixed(2));
      label.className = "visually-hidden";
      shade.append(label);
      row.append(shade);
    });
    rows.append(row);
  });
  const caption = cell("caption", "Attention weights, target pieces by source pieces");
  caption.className = "visually-hidden";
  table.replaceChildren(caption, head, rows);
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", (event) => {
    event.preventDefault();
    translateNow();
  });
  $("text").addEventListener("input", schedule);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      translateNow();
    }
  });
  $("source").addEventListener("change", () => { fillTargets(); translateNow(); });
  $("target").addEventListener("change", () => { $("swap").disabled = !canSwap(); translateNow(); });
  $("alternatives").addEventListener("change", translateNow);
  $("swap").addEventListener("click", swap);
  $("api-key").addEventListener("change", translateNow);
  loadLanguages().catch((error) => showStatus("The server did not answer: " + error.message, true));
});
