// The official TypeScript SDK client (@modelcontextprotocol/sdk: Client + StreamableHTTPClientTransport) driven
// through the gateway. Run by tests/e2e/test_ts_client.py with Node 22:
//
//     node tests/node/ts_client.mjs <profile> <url> [marker]
//
// profile: "everything" (@modelcontextprotocol/server-everything, over stdio or Streamable HTTP behind the
// gateway) or "fixture" (tests/fixtures/conformance_server.py). marker: a unique string put into the echo calls so
// the Python side can find this run's session in the gateway's store.
//
// It prints exactly one JSON object on stdout: what it observed, step by step. A step that throws is recorded under
// "errors" (step name -> message) and the run goes on, so the test names the failing step. A watchdog bounds the
// whole run: when it fires, the partial observation is printed with "timedOut": true and the exit code is 3.
// Diagnostics go to stderr.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [profile, url, marker = `ts-client-${process.pid}`] = process.argv.slice(2);
const WATCHDOG_MS = Number(process.env.TS_CLIENT_WATCHDOG_MS || 60000);

const PROFILES = {
  everything: {
    echo: { name: "echo", args: (text) => ({ message: text }), expect: (text) => `Echo: ${text}` },
    sum: { name: "get-sum", args: { a: 2, b: 40 } },
    structured: { name: "get-structured-content", args: { location: "New York" } },
    // 4 steps, 0.5 s apart
    progress: { name: "trigger-long-running-operation", args: { duration: 2, steps: 4 } },
    // 3 steps over 1.2 s, aborted after 0.3 s; the progress call above (2 s) outlasts it
    slow: { name: "trigger-long-running-operation", args: { duration: 1.2, steps: 3 } },
    sampling: { name: "trigger-sampling-request", args: (prompt) => ({ prompt, maxTokens: 10 }) },
    elicitation: { name: "trigger-elicitation-request", args: () => ({}) },
    prompt: { name: "simple-prompt" },
    promptArgs: { name: "args-prompt", args: { city: "Lisbon" } },
    gatedTools: ["trigger-sampling-request", "trigger-elicitation-request"],
  },
  fixture: {
    echo: { name: "echo", args: (text) => ({ text }), expect: (text) => text },
    sum: null,
    structured: { name: "structured", args: {} },
    // 4 steps, 0.3 s apart
    progress: { name: "slow_progress", args: { steps: 4, delay_ms: 300 } },
    slow: { name: "slow_progress", args: { steps: 12, delay_ms: 100 } },
    sampling: { name: "test_sampling", args: (prompt) => ({ prompt }) },
    elicitation: { name: "test_elicitation", args: () => ({ message: "Who are you?" }) },
    prompt: { name: "test_simple_prompt" },
    promptArgs: { name: "test_prompt_with_arguments", args: { arg1: "Lisbon", arg2: "Porto" } },
    gatedTools: [],
  },
};

const p = PROFILES[profile];
if (!p || !url) {
  process.stderr.write(`usage: ts_client.mjs <${Object.keys(PROFILES).join("|")}> <url> [marker]\n`);
  process.exit(64);
}

const out = { profile, url, marker, errors: {}, transportErrors: [], timedOut: false };
let printed = false;
function finish(code) {
  if (!printed) {
    printed = true;
    process.stdout.write(JSON.stringify(out) + "\n");
  }
  process.exitCode = code;
}

const watchdog = setTimeout(() => {
  out.timedOut = true;
  finish(3);
  process.exit(3);
}, WATCHDOG_MS);

const t0 = performance.now();
const now = () => Math.round((performance.now() - t0) * 10) / 10;
const texts = (result) => (result?.content ?? []).filter((c) => c.type === "text").map((c) => c.text);

async function step(name, fn) {
  try {
    out[name] = await fn();
  } catch (err) {
    out.errors[name] = `${err?.name ?? "Error"}: ${err?.message ?? String(err)}`;
    process.stderr.write(`step ${name} failed: ${err?.stack ?? err}\n`);
  }
}

// Every HTTP exchange goes through this fetch: each answer that is not 2xx is kept in "httpFailures" (with the
// method, the JSON-RPC method of a POST, Last-Event-ID and the body), and TS_CLIENT_TRACE=1 logs all of them.
out.httpFailures = [];
const TRACE = Boolean(process.env.TS_CLIENT_TRACE);
function tracingFetch(name) {
  return async (input, init) => {
    const method = init?.method ?? "GET";
    const headers = new Headers(init?.headers ?? {});
    let rpc = null;
    try {
      rpc = typeof init?.body === "string" ? (JSON.parse(init.body).method ?? "response") : null;
    } catch {
      rpc = "?";
    }
    const res = await fetch(input, init);
    const line = { at: now(), client: name, method, rpc, status: res.status, lastEventId: headers.get("last-event-id") };
    if (res.status >= 300) {
      line.body = (await res.clone().text()).slice(0, 500);
      out.httpFailures.push(line);
    }
    if (TRACE) process.stderr.write(`http ${JSON.stringify(line)}\n`);
    return res;
  };
}

function connect(capabilities, name) {
  const client = new Client({ name, version: "1.0.0" }, { capabilities });
  // TS_CLIENT_BEARER: a bearer token for a gateway that authenticates (the SDK sends it on every request)
  const bearer = process.env.TS_CLIENT_BEARER;
  const requestInit = bearer ? { headers: { Authorization: `Bearer ${bearer}` } } : undefined;
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: tracingFetch(name), requestInit });
  transport.onerror = (err) => out.transportErrors.push(`${name}: ${err?.message ?? String(err)}`);
  return { client, transport };
}

const seenSampling = [];
const seenElicitation = [];

async function main() {
  // A client that declares sampling and elicitation, so capability-gated tools appear and the server may ask.
  const { client, transport } = connect({ sampling: {}, elicitation: { form: {} } }, "portcullis-ts-e2e");
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
    seenSampling.push({ at: now(), params: request.params });
    return {
      role: "assistant",
      content: { type: "text", text: `sampled by ts for: ${request.params.messages[0]?.content?.text ?? "?"}` },
      model: "ts-test-model",
      stopReason: "endTurn",
    };
  });
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    seenElicitation.push({ at: now(), params: request.params });
    const props = request.params.requestedSchema?.properties ?? {};
    const content = {};
    if ("name" in props) content.name = "Ada Lovelace";
    if ("check" in props) content.check = true;
    if ("integer" in props) content.integer = 7;
    if ("username" in props) content.username = "ada";
    if ("email" in props) content.email = "ada@example.com";
    return { action: "accept", content };
  });

  await step("connect", async () => {
    await client.connect(transport);
    return {
      protocolVersion: transport.protocolVersion ?? null,
      hasSessionId: typeof transport.sessionId === "string" && transport.sessionId.length > 0,
      serverInfo: client.getServerVersion() ?? null,
      capabilities: Object.keys(client.getServerCapabilities() ?? {}).sort(),
    };
  });
  if (out.errors.connect) return;

  await step("tools", async () => (await client.listTools()).tools.map((t) => t.name).sort());

  await step("echo", async () => {
    const r = await client.callTool({ name: p.echo.name, arguments: p.echo.args(marker) });
    return { text: texts(r)[0] ?? null, expected: p.echo.expect(marker), isError: r.isError ?? false };
  });

  if (p.sum) {
    await step("sum", async () => {
      const r = await client.callTool({ name: p.sum.name, arguments: p.sum.args });
      return { text: texts(r).join("\n"), isError: r.isError ?? false };
    });
  }

  await step("structured", async () => {
    const r = await client.callTool({ name: p.structured.name, arguments: p.structured.args });
    let twin = null;
    try {
      twin = JSON.parse(texts(r)[0] ?? "null");
    } catch {
      twin = null;
    }
    return { structuredContent: r.structuredContent ?? null, textTwin: twin, isError: r.isError ?? false };
  });

  await step("resource", async () => {
    const list = (await client.listResources()).resources;
    const first = list[0];
    const read = await client.readResource({ uri: first.uri });
    const c = read.contents[0] ?? {};
    return {
      count: list.length,
      uris: list.map((r) => r.uri),
      uri: first.uri,
      readUri: c.uri ?? null,
      textLength: typeof c.text === "string" ? c.text.length : null,
      blobLength: typeof c.blob === "string" ? c.blob.length : null,
    };
  });

  await step("prompts", async () => {
    const names = (await client.listPrompts()).prompts.map((x) => x.name).sort();
    const simple = await client.getPrompt({ name: p.prompt.name });
    const withArgs = await client.getPrompt({ name: p.promptArgs.name, arguments: p.promptArgs.args });
    return {
      names,
      simple: simple.messages.map((m) => m.content?.text ?? null),
      withArgs: withArgs.messages.map((m) => m.content?.text ?? null),
    };
  });

  // Cancellation first: the progress call below outlasts the aborted call, so a result the upstream should have
  // withheld would have arrived (and been recorded by the gateway) by the time this run ends.
  await step("cancel", async () => {
    const controller = new AbortController();
    const started = now();
    const timer = setTimeout(() => controller.abort("ts client aborts"), 300);
    const progress = [];
    try {
      const r = await client.callTool({ name: p.slow.name, arguments: p.slow.args }, undefined, {
        signal: controller.signal,
        onprogress: (pr) => progress.push(pr.progress),
      });
      return { aborted: false, result: texts(r), elapsedMs: now() - started, progress };
    } catch (err) {
      return {
        aborted: controller.signal.aborted,
        error: `${err?.name ?? "Error"}: ${err?.message ?? String(err)}`,
        elapsedMs: now() - started,
        progress,
      };
    } finally {
      clearTimeout(timer);
    }
  });

  await step("afterCancel", async () => {
    const r = await client.callTool({ name: p.echo.name, arguments: p.echo.args("still alive") });
    return { text: texts(r)[0] ?? null, expected: p.echo.expect("still alive") };
  });

  await step("progress", async () => {
    const events = [];
    const started = now();
    const r = await client.callTool({ name: p.progress.name, arguments: p.progress.args }, undefined, {
      onprogress: (pr) => events.push({ progress: pr.progress, total: pr.total ?? null, atMs: now() - started }),
    });
    return { events, resultAtMs: now() - started, result: texts(r), isError: r.isError ?? false };
  });

  await step("sampling", async () => {
    const prompt = `sample-${marker}`;
    const r = await client.callTool({ name: p.sampling.name, arguments: p.sampling.args(prompt) });
    return {
      prompt,
      result: texts(r).join("\n"),
      isError: r.isError ?? false,
      asked: seenSampling.map((s) => ({
        text: s.params.messages.map((m) => m.content?.text ?? null),
        maxTokens: s.params.maxTokens ?? null,
      })),
    };
  });

  await step("elicitation", async () => {
    const r = await client.callTool({ name: p.elicitation.name, arguments: p.elicitation.args() });
    return {
      result: texts(r).join("\n"),
      isError: r.isError ?? false,
      asked: seenElicitation.map((e) => ({
        message: e.params.message,
        fields: Object.keys(e.params.requestedSchema?.properties ?? {}).sort(),
      })),
    };
  });

  await step("terminate", async () => {
    await transport.terminateSession();
    await client.close();
    return { sessionIdAfter: transport.sessionId ?? null };
  });

  // A second client that declares no capabilities: the server must see exactly that through the gateway.
  await step("bare", async () => {
    const bare = connect({}, "portcullis-ts-bare");
    await bare.client.connect(bare.transport);
    try {
      const tools = (await bare.client.listTools()).tools.map((t) => t.name);
      return { gatedToolsPresent: p.gatedTools.filter((n) => tools.includes(n)), toolCount: tools.length };
    } finally {
      await bare.transport.terminateSession();
      await bare.client.close();
    }
  });
}

main()
  .then(() => finish(Object.keys(out.errors).length === 0 ? 0 : 1))
  .catch((err) => {
    out.errors.main = `${err?.name ?? "Error"}: ${err?.message ?? String(err)}`;
    finish(2);
  })
  .finally(() => clearTimeout(watchdog));
