/**
 * Node-RED settings for fastwebhook's workflow benchmark peer (see README.md).
 *
 *   PORT=18090 SECRET=... node node_modules/node-red/red.js --settings settings.js
 *
 * Runtime only: no editor, no admin API, no projects, no telemetry. The one flow is
 * flows.json beside this file (read-only: nothing here can deploy over it).
 */
const path = require("path");
const crypto = require("crypto");
const express = require("express"); // Node-RED's own (pinned by package-lock.json)

const secret = process.env.SECRET;
if (!secret) {
    throw new Error("SECRET is not set: the flow verifies X-Hub-Signature-256 with it");
}

const maxBody = "5mb"; // Node-RED's default apiMaxLength, which its own parsers use

// The http in node parses JSON itself and keeps no bytes, so an HMAC over the raw body needs
// them captured first. This runs before the node's parsers (httpNodeMiddleware is the first
// handler on every http in route after cookie parsing); express.json's `verify` sees the exact
// bytes it then parses, and once it has set req._body the node's own parsers skip the body.
// So the body is read and parsed once, and the function node gets both msg.payload (the
// parsed object) and msg.req.rawBody (a Buffer).
const jsonWithRawBody = express.json({
    limit: maxBody,
    verify: (req, _res, buf) => {
        req.rawBody = buf;
    },
});

module.exports = {
    uiPort: Number(process.env.PORT || 1880),
    uiHost: "127.0.0.1",

    userDir: path.join(__dirname, ".node-red-data"),
    flowFile: path.join(__dirname, "flows.json"),
    flowFilePretty: true,

    credentialSecret: false, // the flow has no credentials

    httpAdminRoot: false, // no editor, no admin API
    httpNodeRoot: "/",
    httpNodeMiddleware: jsonWithRawBody,
    apiMaxLength: maxBody,

    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },

    logging: {
        console: { level: "warn", metrics: false, audit: false },
    },

    functionExternalModules: false,
    functionGlobalContext: {
        crypto: crypto,
        webhookSecret: secret,
    },
    exportGlobalContextKeys: false,
    globalFunctionTimeout: 0,
    functionTimeout: 0,
};
