// The page of scripts/14_serve.py: sends the textarea to POST /predict and draws the answer.
// User text and model output are only ever set with textContent, never parsed as HTML.
"use strict";

const byId = (id) => document.getElementById(id);
const RESULT_SECTIONS = ["classifier-result", "regressor-result", "tagger-result"];

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(message) {
  byId("error").textContent = message;
  byId("error").hidden = !message;
}

async function loadModelInfo() {
  try {
    const response = await fetch("/healthz");
    const info = await response.json();
    const head = info.head ? `, ${info.head} head` : "";
    const labels = info.labels.length ? `; labels: ${info.labels.join(", ")}` : "";
    byId("model-info").textContent = `${info.task}${head}${labels}`;
  } catch (err) {
    byId("model-info").textContent = `the server did not answer /healthz: ${err}`;
  }
}

// Each token on a red background as strong as its weight over the text's largest weight
// (as ulmfit_tasks/rendering.py draws attention); no weights, no background.
function renderTokens(tokens, weights) {
  const top = weights && weights.length ? Math.max(...weights) : 0;
  const spans = tokens.map((token, i) => {
    const span = element("span", "token", token);
    if (weights) {
      const alpha = top > 0 ? weights[i] / top : 0;
      span.dataset.weight = String(weights[i]);
      span.title = weights[i].toFixed(4);
      span.style.backgroundColor = `rgba(255, 0, 0, ${alpha.toFixed(3)})`;
    }
    return span;
  });
  byId("tokens").replaceChildren(...spans);
  byId("tokens-caption").textContent = weights ? "(shaded by attention weight)" : "";
}

function renderClassifier(prediction) {
  byId("label").textContent = prediction.label;
  const rows = Object.entries(prediction.probabilities)
    .sort((a, b) => b[1] - a[1])
    .map(([label, probability]) => {
      const row = element("tr", "probability");
      row.dataset.label = label;
      const bar = element("div", "bar");
      bar.style.width = `${(100 * probability).toFixed(1)}%`;
      const barCell = element("td", "bar-cell");
      barCell.append(bar);
      row.append(element("td", "name", label), barCell, element("td", "value", probability.toFixed(4)));
      return row;
    });
  byId("probabilities").replaceChildren(...rows);
}

function renderRegressor(prediction) {
  byId("score").textContent = prediction.score.toFixed(4);
}

function renderTagger(prediction) {
  const pairs = prediction.words.map((word, i) => {
    const pair = element("span", "word-tag");
    pair.append(element("span", "word", word), element("span", "tag", prediction.tags[i] ?? ""));
    return pair;
  });
  byId("tags").replaceChildren(...pairs);
}

const RENDERERS = { classifier: renderClassifier, regressor: renderRegressor, tagger: renderTagger };

function render(task, prediction) {
  for (const id of RESULT_SECTIONS) byId(id).hidden = id !== `${task}-result`;
  RENDERERS[task](prediction);
  renderTokens(prediction.tokens, prediction.token_weights);
  byId("result").hidden = false;
}

async function predict() {
  const text = byId("text").value;
  if (!text.trim()) {
    showError("Type a text first.");
    return;
  }
  showError("");
  byId("predict").disabled = true;
  byId("status").textContent = "predicting…";
  const started = performance.now();
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts: [text] }),
    });
    const body = await response.json();
    if (!response.ok) {
      showError(body.error || `the server answered ${response.status}`);
      byId("status").textContent = "";
      return;
    }
    render(body.task, body.predictions[0]);
    byId("status").textContent = `${Math.round(performance.now() - started)} ms`;
  } catch (err) {
    showError(`the request failed: ${err}`);
    byId("status").textContent = "";
  } finally {
    byId("predict").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  byId("predict").addEventListener("click", predict);
  byId("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) predict();
  });
  loadModelInfo();
});
