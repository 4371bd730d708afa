// Posts one message to the Sluice API with Node's built-in fetch and prints
// the status and the JSON answer: node api_fetch.mjs URL KEY BODY_JSON
// (the daemon's certificate comes in through NODE_EXTRA_CA_CERTS).
const [url, key, body] = process.argv.slice(2);
const res = await fetch(url, {
  method: "POST",
  headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
  body,
});
const text = await res.text();
console.log(JSON.stringify({ status: res.status, body: text ? JSON.parse(text) : null }));
