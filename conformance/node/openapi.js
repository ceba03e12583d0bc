#!/usr/bin/env node
// Checks a live server's OpenAPI document (GET /api/openapi.json):
// - it is valid OpenAPI 3.1 (@seriousme/openapi-schema-validator, which
//   checks 3.1 strictly against the specification's own schemas);
// - every operation has a unique operationId and declares each {param}
//   of its path;
// - every example (of a request or response body, a parameter or a
//   schema) validates against its schema (ajv, JSON Schema 2020-12, the
//   3.1 dialect);
// - every ULID in an example is a real ULID (26 Crockford base32
//   characters, the first 0-7), and every property described as a ULID
//   has one.
//
//   node conformance/node/openapi.js --url http://127.0.0.1:4000
//   (or ROLLCALL_URL)
//
// Prints one PASS/FAIL line per check and "N passed, M failed"; exits 1
// on any failure.
'use strict';

const path = require('path');

const modules = path.join(__dirname, '..', 'node_modules');
const Ajv2020 = require(path.join(modules, 'ajv', 'dist', '2020.js')).default;
const addFormats = require(path.join(modules, 'ajv-formats')).default;

function arg(name, env, dflt) {
  const i = process.argv.indexOf('--' + name);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  if (env && process.env[env]) return process.env[env];
  return dflt;
}

const URL_BASE = arg('url', 'ROLLCALL_URL', 'http://127.0.0.1:4000')
  .replace(/^ws(s?):/, 'http$1:')
  .replace(/\/+$/, '');

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const ULID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
// Anything shaped like a ULID attempt: 26 upper-case letters and digits.
const ULID_LIKE = /\b[0-9A-Z]{26}\b/g;

let passed = 0;
let failed = 0;
function check(name, problems) {
  if (problems.length === 0) {
    passed++;
    console.log(`PASS ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}`);
    for (const p of problems.slice(0, 50)) console.log(`    ${p}`);
  }
}

function operations(doc) {
  const ops = [];
  for (const [p, item] of Object.entries(doc.paths || {})) {
    for (const m of METHODS) {
      if (item[m]) ops.push({ path: p, method: m, op: item[m] });
    }
  }
  return ops;
}

// Every (where, schema, example) in the document: media types,
// parameters, and schemas with `example` or `examples` anywhere.
function examples(doc) {
  const found = [];
  const media = (where, content) => {
    for (const [type, m] of Object.entries(content || {})) {
      if (!m.schema) continue;
      if ('example' in m) found.push({ where: `${where} ${type}`, schema: m.schema, value: m.example });
      for (const [name, ex] of Object.entries(m.examples || {})) {
        if (ex && 'value' in ex) found.push({ where: `${where} ${type} examples.${name}`, schema: m.schema, value: ex.value });
      }
    }
  };
  for (const { path: p, method, op } of operations(doc)) {
    const where = `${method.toUpperCase()} ${p}`;
    for (const param of op.parameters || []) {
      if (param.schema && 'example' in param) {
        found.push({ where: `${where} parameter ${param.name}`, schema: param.schema, value: param.example });
      }
    }
    if (op.requestBody) media(`${where} request`, op.requestBody.content);
    for (const [status, r] of Object.entries(op.responses || {})) media(`${where} ${status}`, r.content);
  }
  const walk = (where, node) => {
    if (!node || typeof node !== 'object') return;
    if (Array.isArray(node)) return node.forEach((n, i) => walk(`${where}[${i}]`, n));
    if ('example' in node) found.push({ where: `${where} example`, schema: node, value: node.example });
    if (Array.isArray(node.examples)) {
      node.examples.forEach((ex, i) => found.push({ where: `${where} examples[${i}]`, schema: node, value: ex }));
    }
    for (const [k, v] of Object.entries(node)) {
      if (k !== 'example' && k !== 'examples') walk(`${where}.${k}`, v);
    }
  };
  for (const [name, schema] of Object.entries((doc.components || {}).schemas || {})) {
    walk(`schema ${name}`, schema);
  }
  return found;
}

function strings(value, out = []) {
  if (typeof value === 'string') out.push(value);
  else if (Array.isArray(value)) value.forEach((v) => strings(v, out));
  else if (value && typeof value === 'object') Object.values(value).forEach((v) => strings(v, out));
  return out;
}

function resolve(doc, schema) {
  let s = schema;
  for (let i = 0; s && s.$ref && i < 10; i++) {
    const parts = s.$ref.replace(/^#\//, '').split('/');
    s = parts.reduce((node, key) => (node ? node[key.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), doc);
  }
  return s;
}

// Properties whose description says they hold a ULID, checked in the
// example beside the schema (objects and arrays of objects).
function ulidProperties(doc, schema, value, where, problems) {
  const s = resolve(doc, schema);
  if (!s || value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    if (s.items) value.forEach((v, i) => ulidProperties(doc, s.items, v, `${where}[${i}]`, problems));
    return;
  }
  for (const [name, prop] of Object.entries(s.properties || {})) {
    const p = resolve(doc, prop) || {};
    const described = `${prop.description || ''} ${p.description || ''}`;
    if (/\bULID\b/.test(described) && name in value && !ULID.test(String(value[name]))) {
      problems.push(`${where}.${name}: ${JSON.stringify(value[name])} is not a ULID`);
    }
    if (name in value) ulidProperties(doc, prop, value[name], `${where}.${name}`, problems);
  }
}

async function main() {
  const url = `${URL_BASE}/api/openapi.json`;
  const res = await fetch(url);
  const text = await res.text();
  check(`GET /api/openapi.json answers 200 application/json`, [
    ...(res.status === 200 ? [] : [`status ${res.status}`]),
    ...((res.headers.get('content-type') || '').startsWith('application/json') ? [] : [`content-type ${res.headers.get('content-type')}`]),
  ]);
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    check('the document is JSON', [String(e)]);
    return;
  }

  const { Validator } = await import(path.join(modules, '@seriousme', 'openapi-schema-validator', 'index.js'));
  const validator = new Validator();
  // A copy: the validator may annotate what it is given.
  const result = await validator.validate(JSON.parse(text));
  check(`valid OpenAPI ${doc.openapi} (validator for ${validator.version})`, [
    ...(result.valid ? [] : [JSON.stringify(result.errors, null, 1)]),
    ...(String(doc.openapi).startsWith('3.1.') ? [] : [`openapi is ${doc.openapi}, not 3.1.x`]),
  ]);

  const ops = operations(doc);
  const ids = new Map();
  const idProblems = [];
  for (const { path: p, method, op } of ops) {
    const where = `${method.toUpperCase()} ${p}`;
    if (typeof op.operationId !== 'string' || op.operationId === '') {
      idProblems.push(`${where}: no operationId`);
    } else if (ids.has(op.operationId)) {
      idProblems.push(`${where}: operationId ${op.operationId} also on ${ids.get(op.operationId)}`);
    } else {
      ids.set(op.operationId, where);
    }
  }
  check(`every operation (${ops.length}) has a unique operationId`, idProblems);

  const paramProblems = [];
  for (const { path: p, method, op } of ops) {
    const inPath = [...p.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
    const declared = (op.parameters || []).filter((x) => x.in === 'path').map((x) => x.name).sort();
    if (JSON.stringify(inPath) !== JSON.stringify(declared)) {
      paramProblems.push(`${method.toUpperCase()} ${p}: path has ${inPath}, parameters ${declared}`);
    }
  }
  check('every path parameter is declared', paramProblems);

  const schemes = Object.keys((doc.components || {}).securitySchemes || {});
  const securityProblems = [];
  for (const { path: p, method, op } of ops) {
    for (const req of op.security || doc.security || []) {
      for (const name of Object.keys(req)) {
        if (!schemes.includes(name)) securityProblems.push(`${method.toUpperCase()} ${p}: unknown scheme ${name}`);
      }
    }
  }
  check('every security requirement names a declared scheme', securityProblems);

  // One Ajv for every example: the document's components are reachable
  // from each example's schema by the document's own `#/components/...`.
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats(ajv);
  // OpenAPI's additions to the 3.1 schema dialect, and its integer formats;
  // `components` holds the schemas the examples' `$ref`s point into.
  for (const keyword of ['example', 'discriminator', 'xml', 'externalDocs', 'components']) ajv.addKeyword(keyword);
  for (const format of ['int32', 'int64', 'float', 'double', 'uint32', 'uint64']) ajv.addFormat(format, true);
  ajv.addSchema({ $id: 'https://rollcall.invalid/openapi.json', components: doc.components || {} });
  const all = examples(doc);
  const exampleProblems = [];
  for (const { where, schema, value } of all) {
    const wrapped = JSON.parse(JSON.stringify(schema).replace(/"\$ref":"#\//g, '"$ref":"https://rollcall.invalid/openapi.json#/'));
    delete wrapped.example;
    delete wrapped.examples;
    let validate;
    try {
      validate = ajv.compile(wrapped);
    } catch (e) {
      exampleProblems.push(`${where}: schema does not compile: ${e.message}`);
      continue;
    }
    if (!validate(value)) {
      exampleProblems.push(`${where}: ${JSON.stringify(value)}: ${ajv.errorsText(validate.errors)}`);
    }
  }
  check(`every example (${all.length}) validates against its schema`, [
    ...(all.length > 0 ? [] : ['no examples found']),
    ...exampleProblems,
  ]);

  const ulidProblems = [];
  let ulids = 0;
  for (const { where, schema, value } of all) {
    for (const s of strings(value)) {
      for (const m of s.match(ULID_LIKE) || []) {
        ulids++;
        if (!ULID.test(m)) ulidProblems.push(`${where}: ${m} is not a ULID`);
      }
    }
    ulidProperties(doc, schema, value, where, ulidProblems);
  }
  check(`every ULID in the examples (${ulids}) is valid`, [
    ...(ulids > 0 ? [] : ['no ULID found in the examples']),
    ...ulidProblems,
  ]);
}

main()
  .catch((e) => {
    failed++;
    console.log(`FAIL ${e && e.stack ? e.stack : e}`);
  })
  .finally(() => {
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
  });
