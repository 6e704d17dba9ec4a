// corral's pages. Journal data (model output, tool results, column names…) is only ever set as text:
// this file never assigns innerHTML/outerHTML and never builds markup from strings.
"use strict";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const fields = (data.errors || []).map((e) => `${e.loc.slice(1).join(".")}: ${e.msg}`);
    throw new Error([data.detail || data.title || response.statusText, ...fields].join("; "));
  }
  return data;
}

function stepItem(step) {
  const head = el("div", { class: "step-head" },
    el("span", { class: `kind kind-${step.kind}`, text: step.kind }),
    el("span", { class: "title", text: step.title }),
    el("span", { class: `status status-${step.status}`, text: step.status }),
    el("span", { class: "muted", text: step.duration_ms === null ? "" : `${step.duration_ms.toFixed(1)} ms` }));
  if (step.usage) {
    const u = step.usage;
    head.append(el("span", { class: "usage", text: `${u.input_tokens}+${u.output_tokens} tokens · $${u.cost_usd.toFixed(4)}` }));
  }
  const li = el("li", { class: `step step-${step.kind}`, "data-position": String(step.position), "data-kind": step.kind }, head);
  for (const [name, text] of Object.entries(step.fields)) {
    const open = ["output", "result", "error", "stdout", "stderr", "sql"].includes(name);
    const box = el("details", open ? { open: "" } : {}, el("summary", { text: name }), el("pre", { text }));
    li.append(box);
  }
  return li;
}

function followRun(runId, { onRun, onEnd } = {}) {
  const list = document.getElementById("timeline");
  const live = document.getElementById("live");
  const source = new EventSource(`/api/runs/${encodeURIComponent(runId)}/events`);
  if (live) live.textContent = "live";
  source.addEventListener("step", (event) => {
    const step = JSON.parse(event.data);
    const item = stepItem(step);
    const old = list.querySelector(`li[data-position="${step.position}"]`);
    if (old) old.replaceWith(item); else list.append(item);
  });
  source.addEventListener("data", (event) => {
    // The data agent's own account of a step: what it wrote, ran, noted and how the judge ruled.
    const note = JSON.parse(event.data);
    list.append(el("li", { class: `step note step-${note.kind}`, "data-kind": `note-${note.kind}` },
      el("div", { class: "step-head" },
        el("span", { class: `kind kind-${note.kind}`, text: note.kind }),
        el("span", { class: "title", text: note.message }))));
  });
  source.addEventListener("run", (event) => { if (onRun) onRun(JSON.parse(event.data)); });
  source.addEventListener("end", (event) => {
    source.close();
    if (live) live.textContent = "finished";
    if (onEnd) onEnd(JSON.parse(event.data));
  });
  source.onerror = () => { if (live) live.textContent = "reconnecting…"; };
  return source;
}

function setStatus(node, status) {
  node.textContent = status;
  node.className = `status status-${status}`;
}

function runPage() {
  const runId = document.getElementById("run").dataset.runId;
  const statusNode = document.getElementById("run-status");
  const cancel = document.getElementById("cancel-run");
  followRun(runId, {
    onRun: (run) => {
      setStatus(statusNode, run.status);
      document.getElementById("run-cost").textContent = `${run.tokens} · $${run.cost_usd.toFixed(4)}`;
    },
    onEnd: async () => {
      cancel.disabled = true;
      const run = await api("GET", `/api/runs/${encodeURIComponent(runId)}`);
      if (run.output !== null) {
        document.getElementById("output-section").hidden = false;
        document.getElementById("run-output").textContent = JSON.stringify(run.output, null, 2);
      }
    },
  });
  cancel.addEventListener("click", async () => {
    try { setStatus(statusNode, (await api("POST", `/api/runs/${encodeURIComponent(runId)}/cancel`)).status); }
    catch (error) { alert(error.message); }
  });
}

function approvalsPage() {
  for (const article of document.querySelectorAll("article.approval")) {
    const form = article.querySelector("form.decide");
    if (!form) continue;
    const id = article.dataset.approvalId;
    const result = form.querySelector(".result");
    for (const button of form.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        const body = { reason: form.elements.reason.value, args_hash: article.dataset.argsHash };
        if (action === "edit") {
          try { body.arguments = JSON.parse(form.elements.arguments.value); }
          catch (error) { result.textContent = `The edited arguments are not JSON: ${error.message}`; return; }
        }
        try {
          const decided = await api("POST", `/api/approvals/${encodeURIComponent(id)}/${action}`, body);
          result.textContent = `${decided.status} — the run goes on when a worker picks it up.`;
          setStatus(article.querySelector("h2 .status"), decided.status);
          for (const b of form.querySelectorAll("button")) b.disabled = true;
        } catch (error) {
          result.textContent = error.message;
        }
      });
    }
  }
}

function showAnswer(runId, answer) {
  document.getElementById("answer").hidden = false;
  document.getElementById("answer-text").textContent = `${answer.status}: ${answer.answer}`;
  const table = document.getElementById("answer-table");
  const head = table.tHead; const body = table.tBodies[0];
  head.replaceChildren(el("tr", {}, ...(answer.columns || []).map((c) => el("th", { text: c }))));
  body.replaceChildren(...(answer.rows || []).slice(0, 200).map(
    (row) => el("tr", {}, ...row.map((v) => el("td", { text: v === null ? "" : String(v) })))));
  document.getElementById("answer-rows").textContent = answer.row_count ? `${answer.row_count} rows` : "";
  document.getElementById("query-heading").textContent = answer.code ? "Code (pandas)" : "SQL";
  document.getElementById("answer-query").textContent = answer.sql || answer.code || "";
  if (answer.chart) {
    document.getElementById("chart").src = `/api/runs/${encodeURIComponent(runId)}/chart.png`;
    document.getElementById("chart-figure").hidden = false;
  }
  if (answer.vega_lite) {
    document.getElementById("vega-spec").textContent = JSON.stringify(answer.vega_lite, null, 2);
    document.getElementById("spec-details").hidden = false;
  }
}

function askPage() {
  const form = document.getElementById("ask-form");
  const status = document.getElementById("ask-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    document.getElementById("answer").hidden = true;
    document.getElementById("timeline").replaceChildren();
    status.textContent = "asking…";
    let started;
    try {
      started = await api("POST", "/api/ask", {
        question: form.elements.question.value, source: form.elements.source.value });
    } catch (error) { status.textContent = error.message; return; }
    const link = document.getElementById("ask-run-link");
    link.href = `/runs/${encodeURIComponent(started.run_id)}`;
    link.textContent = started.run_id;
    document.getElementById("ask-steps-section").hidden = false;
    followRun(started.run_id, {
      onEnd: async (end) => {
        const run = await api("GET", `/api/runs/${encodeURIComponent(started.run_id)}`);
        status.textContent = `run ${end.status}`;
        if (run.output && typeof run.output === "object" && "answer" in run.output) showAnswer(started.run_id, run.output);
        else if (run.output) status.textContent = `run ${end.status}: ${JSON.stringify(run.output)}`;
      },
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "run") runPage();
  else if (page === "approvals") approvalsPage();
  else if (page === "ask") askPage();
});
