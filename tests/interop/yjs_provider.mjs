// A stock y-websocket provider (npm y-websocket 2 + yjs 13) in Node, driven by the Yjs endpoint
// tests (tests/test_yjs_endpoint.py): one JSON command per stdin line, one JSON answer per line.
//   node yjs_provider.mjs <server url, e.g. ws://127.0.0.1:1999/yjs> <room> [token]
// Commands: {"op": "state"} -> the document, the awareness states of the others, connection counts;
// {"op": "push", "key", "value"}; {"op": "insert", "key", "index", "text"};
// {"op": "awareness", "state"}; {"op": "bench", "count", "key"} -> pushes count items, one transaction each;
// {"op": "count", "key"} -> the length of an array (bench/yjs_edits.py).
import readline from "node:readline";
import WebSocket from "ws";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";

const [serverUrl, room, token] = process.argv.slice(2);
const doc = new Y.Doc();
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  params: token ? { token } : {},
});
const counts = { connected: 0, closed: 0, denied: 0 };
provider.on("status", ({ status }) => {
  if (status === "connected") counts.connected++;
});
provider.on("connection-close", () => counts.closed++);
const warn = console.warn;
console.warn = (...args) => {
  if (String(args[0]).startsWith("Permission denied")) counts.denied++;
  warn(...args);
};

function state() {
  const others = [];
  for (const [clientId, value] of provider.awareness.getStates()) {
    if (clientId !== doc.clientID) others.push({ clientId, state: value });
  }
  return {
    clientId: doc.clientID,
    synced: provider.synced,
    messages: doc.getArray("messages").toJSON(),
    notes: doc.getText("notes").toString(),
    others,
    ...counts,
  };
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  let answer = { ok: true };
  if (command.op === "state") answer = state();
  else if (command.op === "count") answer = { count: doc.getArray(command.key).length };
  else if (command.op === "push") doc.getArray(command.key).push([command.value]);
  else if (command.op === "insert") doc.getText(command.key).insert(command.index, command.text);
  else if (command.op === "awareness") provider.awareness.setLocalState(command.state);
  else if (command.op === "bench") {
    const array = doc.getArray(command.key);
    for (let i = 0; i < command.count; i++) array.push([i]);
  } else if (command.op === "close") {
    provider.destroy();
    process.stdout.write(JSON.stringify(answer) + "\n");
    break;
  } else answer = { error: `unknown op ${command.op}` };
  process.stdout.write(JSON.stringify(answer) + "\n");
}
process.exit(0);
