// Real yjs on the other side of the interop test.
//   node yjs_roundtrip.mjs make   -> prints a base64 update of a document built here
//   node yjs_roundtrip.mjs read   <- reads a base64 update on stdin, prints the document as JSON
import * as Y from "yjs";

const mode = process.argv[2];
if (mode === "make") {
  const doc = new Y.Doc();
  const messages = doc.getArray("messages");
  messages.push(["from yjs", "second"]);
  const card = new Y.Map();
  card.set("id", 7);
  card.set("text", "a map inside an array");
  messages.push([card]);
  doc.getText("notes").insert(0, "typed in node");
  process.stdout.write(Buffer.from(Y.encodeStateAsUpdate(doc)).toString("base64"));
} else if (mode === "read") {
  let input = "";
  process.stdin.on("data", (chunk) => (input += chunk));
  process.stdin.on("end", () => {
    const doc = new Y.Doc();
    Y.applyUpdate(doc, Buffer.from(input.trim(), "base64"));
    const out = { messages: doc.getArray("messages").toJSON(), notes: doc.getText("notes").toString() };
    process.stdout.write(JSON.stringify(out));
  });
} else {
  console.error("usage: node yjs_roundtrip.mjs make|read");
  process.exit(2);
}
