'use strict';
// Reads one HTTP message, {"headers": {name: value}, "body": "text"}, as
// JSON on stdin and parses it as a CloudEvents consumer does, with the
// CloudEvents SDK for JavaScript (HTTP.toEvent, either content mode), then
// validates the event. Prints the event as JSON ({"attributes": {...},
// "data": ...}) and exits 0, or prints why it is no CloudEvent on stderr
// and exits 1. NODE_PATH names the node_modules that `npm ci` filled.
const { HTTP } = require('cloudevents');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  try {
    const message = JSON.parse(input);
    if (!HTTP.isEvent(message)) {
      throw new Error('not a CloudEvents message');
    }
    const event = HTTP.toEvent(message);
    if (Array.isArray(event)) {
      throw new Error('a batch, not one event');
    }
    event.validate();
    const attributes = {};
    for (const [key, value] of Object.entries(event.toJSON())) {
      if (key !== 'data' && key !== 'data_base64') {
        attributes[key] = value;
      }
    }
    process.stdout.write(JSON.stringify({ attributes, data: event.data }) + '\n');
  } catch (err) {
    process.stderr.write(`ce-parse: ${err && err.message ? err.message : err}\n`);
    if (err && err.errors) {
      process.stderr.write(JSON.stringify(err.errors) + '\n');
    }
    process.exit(1);
  }
});
