// A real OpenID Connect provider for the test suite, built on the npm package `oidc-provider` (panva), bound to
// 127.0.0.1 only. Started by tests/support/oidc.py with Node 22 (oidc-provider 9 refuses older runtimes):
//
//     node tests/node/oidc_provider.mjs [--config FILE.json] [--port N]      (port also from OIDC_PORT; 0 = free)
//
// Once listening it prints exactly one line on stdout:
//
//     READY http://127.0.0.1:<port>
//
// which is the issuer identifier, byte for byte (no trailing slash). Diagnostics go to stderr.
//
// Configuration: FILE.json is deep-merged over DEFAULTS below (objects merge key by key, arrays and scalars replace,
// a `null` value deletes the key, e.g. {"users": {"dave": null}}). See DEFAULTS for every key and its meaning.
//
// What a client sees (standard oidc-provider routes under the issuer):
//   /.well-known/openid-configuration   discovery; the same document at /.well-known/oauth-authorization-server
//                                       (RFC 8414) unless `oauthAuthorizationServerMetadata` is false
//   /jwks  /auth  /token  /reg (dynamic client registration)  /me (userinfo)  /session/end
// Headless login (instead of devInteractions):
//   GET  /interaction/:uid              login prompt: logs in `login_hint` at once when it names a configured user,
//                                       otherwise answers 200 with a tiny HTML form; consent prompt: granted
//                                       automatically (every requested scope, for every requested resource).
//   POST /interaction/:uid/login        form field `user=<name>`: logs that user in (unknown name: the authorization
//                                       request ends with error=access_denied, as a refused login would)
//   POST /interaction/:uid/abort        ends the request with error=access_denied (the user said no)
// Test hooks (loopback peers only, JSON in and out):
//   GET  /__test__/config               the effective configuration (defaults merged with FILE.json)
//   GET  /__test__/keys                 the PRIVATE signing JWKs (keystore order) and which kid signs what, so the
//                                       Python side can forge tokens with the real key (negative tests only)
//   POST /__test__/rotate-keys          body {"keep_old": true|false}: fresh keys (new kids) sign from now on; the old
//                                       keys stay in the JWKS (verify-only) when keep_old, else they are dropped
//   PUT  /__test__/users/:name          body: claims merged into that user (null deletes a claim; creates the user)
//
//   GET  /__test__/exchanges            every token-exchange request that reached the grant (a client without it is
//                                       refused before), in order: {client_id, ok, error, sub, target, jti,
//                                       subject_jti} (never a token itself)
//
// Access tokens requested with `resource=<url>` (RFC 8707) are JWTs (RFC 9068): header {alg: RS256 (or ES256), typ:
// "at+jwt", kid}; claims: the account's `accessTokenClaims` (or the client's groups/claims for client credentials),
// jti, sub, iat, exp, scope (only the requested scopes from `scopes`, e.g. "mcp:tools"), client_id, iss (the issuer
// exactly), aud (the resource string exactly as requested, one string). No nbf. Without a resource the token is
// opaque (userinfo only). An authorization request that asks for no scope at all ends in access_denied.
//
// Token exchange (RFC 8693; oidc-provider does not ship it, so it is registered here as a custom grant): a confidential
// client whose grant_types include urn:ietf:params:oauth:grant-type:token-exchange (by default `portcullis-gateway`)
// POSTs subject_token (an access token of this provider: a JWT verified with the provider's own keys, or an opaque
// one), subject_token_type (…:token-type:access_token or …:token-type:jwt), one target (`resource` or `audience`, an
// absolute http(s) URL checked like a resource indicator), optionally `scope` (a subset of the subject token's scopes)
// and requested_token_type (…:access_token or …:jwt). It gets a JWT access token shaped like the others: sub = the
// subject token's sub, the account's `accessTokenClaims` (e.g. groups; for a subject that is no account, those claims
// copied from the subject token), client_id = the requesting client, aud = the target, and
// act = {sub: <requesting client_id>} (nested with the subject token's own `act`, RFC 8693 4.1). A `may_act` claim in
// the subject token restricts who may act (4.4). The response carries issued_token_type …:access_token,
// token_type Bearer, expires_in and scope. Refusals follow 2.2.2: invalid_request for a subject token that is
// invalid or unacceptable (and for an unsupported token type or actor_token), invalid_target for the target,
// invalid_scope for the scope; a client without the grant gets oidc-provider's own refusal (invalid_request).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const DEFAULTS = {
  // Listen port (0: a free port chosen by the kernel). --port and OIDC_PORT take precedence over this.
  port: 0,
  // Login name -> account. `sub` defaults to the login name. Every claim listed in `accessTokenClaims` that the
  // account has is copied into its access tokens; ID tokens and userinfo follow the requested scopes (see `claims`).
  // A user without a `groups` key gets no `groups` claim at all; dave has an empty list.
  users: {
    alice: {
      sub: 'alice',
      email: 'alice@example.test',
      email_verified: true,
      name: 'Alice Anders',
      groups: ['eng', 'oncall'],
      realm_access: { roles: ['mcp-user', 'mcp-admin'] },
    },
    bob: {
      sub: 'bob',
      email: 'bob@example.test',
      email_verified: true,
      name: 'Bob Brown',
      groups: ['eng'],
      realm_access: { roles: ['mcp-user'] },
    },
    carol: {
      sub: 'carol',
      email: 'carol@example.test',
      email_verified: true,
      name: 'Carol Chen',
      groups: ['auditors'],
      realm_access: { roles: ['mcp-auditor'] },
    },
    dave: {
      sub: 'dave',
      email: 'dave@example.test',
      email_verified: true,
      name: 'Dave Dunn',
      groups: [],
    },
  },
  // Static clients: oidc-provider client metadata plus two keys of ours, `groups` and `claims`, copied into every
  // access token the client gets with the client-credentials grant (its `sub` is the client_id).
  // Confidential clients default to grant_types ["client_credentials"], no redirect URIs, client_secret_basic.
  // `portcullis-gateway` may also exchange users' tokens (RFC 8693, below); `portcullis-service` may not.
  clients: [
    {
      client_id: 'portcullis-service',
      client_secret: 'portcullis-service-secret',
      groups: ['svc-batch'],
      claims: { realm_access: { roles: ['mcp-service'] } },
    },
    {
      client_id: 'portcullis-gateway',
      client_secret: 'portcullis-gateway-secret',
      grant_types: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'],
      groups: ['svc-gateway'],
    },
  ],
  // Token exchange policy. subjectAudiences: null accepts a subject token of any audience; a list accepts only subject
  // tokens whose aud is one of them (anything else: invalid_request).
  tokenExchange: { subjectAudiences: null },
  // Scopes beyond the OIDC ones (openid, offline_access, and the `claims` keys). They are accepted everywhere
  // (discovery scopes_supported, dynamic registration `scope`, authorization and token requests) and they are the
  // resource-server scopes: an access token for a resource carries exactly those of them that were requested.
  scopes: ['mcp:tools'],
  // OIDC scope -> claims it releases in the ID token and at userinfo.
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email', 'email_verified'],
    groups: ['groups', 'realm_access'],
  },
  // Account claims copied into user access tokens (regardless of the requested scopes).
  accessTokenClaims: ['email', 'name', 'groups', 'realm_access'],
  // Access-token lifetime in seconds (authorization-code and client-credentials tokens alike).
  accessTokenTTL: 600,
  // JWS alg of the access tokens: RS256 or ES256 (the key types below must include it).
  accessTokenSigningAlg: 'RS256',
  // Signing keys generated at start (and again on each rotation), one per alg, in this order. ID tokens use RS256.
  signingKeys: ['RS256', 'ES256'],
  // Allowed resource indicators: null accepts any absolute http(s) URL without a fragment; a list accepts only those
  // (anything else gets error=invalid_target).
  resources: null,
  // Resource used when a request names none (null: none; such a user token is then opaque, usable only at userinfo).
  defaultResource: null,
  // Refresh tokens are issued when the client may use the refresh_token grant and asked for offline_access.
  refreshTokens: true,
  // oidc-provider serves its metadata at /.well-known/oauth-authorization-server (RFC 8414) as well as at
  // /.well-known/openid-configuration. false: the RFC 8414 URL answers 404, like an OIDC-only identity provider (the
  // MCP Python SDK tries it first and falls back to the OIDC URL).
  oauthAuthorizationServerMetadata: true,
  // Other lifetimes, seconds.
  ttl: { AuthorizationCode: 60, IdToken: 3600, RefreshToken: 86400, Interaction: 600, Session: 86400, Grant: 86400 },
};

// ---------------------------------------------------------------------------------------------------------------
// configuration

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function deepMerge(base, overrides) {
  const out = structuredClone(base);
  for (const [key, value] of Object.entries(overrides ?? {})) {
    if (value === null) delete out[key];
    else if (isPlainObject(value) && isPlainObject(out[key])) out[key] = deepMerge(out[key], value);
    else out[key] = structuredClone(value);
  }
  return out;
}

const { values: argv } = parseArgs({
  options: { config: { type: 'string' }, port: { type: 'string' } },
  strict: true,
});
const fileConfig = argv.config ? JSON.parse(fs.readFileSync(argv.config, 'utf8')) : {};
const config = deepMerge(DEFAULTS, fileConfig);
const port = Number(argv.port ?? process.env.OIDC_PORT ?? config.port ?? 0);
const HOST = '127.0.0.1';

const SUPPORTED_ALGS = { RS256: { type: 'rsa', options: { modulusLength: 2048 } }, ES256: { type: 'ec', options: { namedCurve: 'P-256' } } };
for (const alg of config.signingKeys) {
  if (!SUPPORTED_ALGS[alg]) throw new Error(`signingKeys: unsupported alg ${alg} (use ${Object.keys(SUPPORTED_ALGS)})`);
}
if (!config.signingKeys.includes('RS256')) throw new Error('signingKeys must include RS256 (ID tokens are RS256)');
if (!config.signingKeys.includes(config.accessTokenSigningAlg)) {
  throw new Error(`accessTokenSigningAlg ${config.accessTokenSigningAlg} has no key in signingKeys`);
}

function log(...args) {
  process.stderr.write(`[oidc-provider] ${args.join(' ')}\n`);
}

// ---------------------------------------------------------------------------------------------------------------
// keys

let generation = 0;

function generateKeys() {
  generation += 1;
  return config.signingKeys.map((alg) => {
    const { type, options } = SUPPORTED_ALGS[alg];
    const { privateKey } = crypto.generateKeyPairSync(type, options);
    const jwk = privateKey.export({ format: 'jwk' });
    return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-g${generation}-${crypto.randomBytes(6).toString('hex')}` };
  });
}

// Keystore order matters: oidc-provider signs with the first key that fits the alg, so fresh keys go first.
let signingJwks = generateKeys();

function publicJwk(jwk) {
  const { d, p, q, dp, dq, qi, ...pub } = jwk;
  return pub;
}

function activeKids() {
  const out = {};
  for (const jwk of signingJwks) out[jwk.alg] ??= jwk.kid;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// storage shared by every Provider instance (a key rotation builds a new one), so clients registered dynamically,
// sessions, grants and codes survive the swap. No LRU eviction (oidc-provider's own memory adapter caps at 1000).

const store = new Map();
const now = () => Math.floor(Date.now() / 1000);

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.exp !== undefined && entry.exp <= now()) {
    store.delete(key);
    return undefined;
  }
  return entry;
}

class SharedAdapter {
  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const exp = expiresIn ? now() + expiresIn : undefined;
    store.set(this.key(id), { payload: structuredClone(payload), exp });
    if (payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = live(grantKey)?.payload ?? [];
      members.push(this.key(id));
      store.set(grantKey, { payload: members, exp });
    }
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: id, exp });
    if (payload.uid) store.set(`sessionUid:${payload.uid}`, { payload: id, exp });
  }

  async find(id) {
    const entry = live(this.key(id));
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUserCode(userCode) {
    const id = live(`userCode:${userCode}`)?.payload;
    return id === undefined ? undefined : this.find(id);
  }

  async findByUid(uid) {
    const id = live(`sessionUid:${uid}`)?.payload;
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = live(this.key(id));
    if (entry) entry.payload.consumed = now();
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const key of live(grantKey)?.payload ?? []) store.delete(key);
    store.delete(grantKey);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// accounts and clients

const users = config.users;
const clientClaims = new Map();
const staticClients = config.clients.map((entry) => {
  const { groups, claims, ...metadata } = entry;
  clientClaims.set(metadata.client_id, { ...(claims ?? {}), ...(groups !== undefined ? { groups } : {}) });
  const confidential = metadata.token_endpoint_auth_method !== 'none';
  return {
    grant_types: confidential ? ['client_credentials'] : ['authorization_code', 'refresh_token'],
    redirect_uris: [],
    response_types: confidential ? [] : ['code'],
    ...metadata,
  };
});

function accountFor(login) {
  const user = users[login];
  if (!isPlainObject(user)) return undefined;
  return { login, sub: user.sub ?? login, ...user };
}

function accountBySub(sub) {
  for (const login of Object.keys(users)) {
    const account = accountFor(login);
    if (account?.sub === sub) return account;
  }
  return undefined;
}

async function findAccount(_ctx, sub) {
  const account = accountBySub(sub);
  if (!account) return undefined;
  return {
    accountId: sub,
    async claims() {
      const { login, ...claims } = accountBySub(sub) ?? account;
      return { ...claims, sub };
    },
  };
}

// access token issued by the token-exchange grant -> {act, subjectClaims} (read when the token is formatted)
const exchangedTokens = new WeakMap();

function copyAccessTokenClaims(source) {
  const extra = {};
  for (const claim of config.accessTokenClaims) {
    if (source[claim] !== undefined) extra[claim] = structuredClone(source[claim]);
  }
  return extra;
}

async function extraTokenClaims(_ctx, token) {
  if (token.kind === 'ClientCredentials') {
    return structuredClone(clientClaims.get(token.clientId) ?? {});
  }
  const exchange = exchangedTokens.get(token);
  if (exchange) {
    const account = accountBySub(token.accountId);
    return { ...copyAccessTokenClaims(account ?? exchange.subjectClaims), act: structuredClone(exchange.act) };
  }
  if (token.accountId) {
    const account = accountBySub(token.accountId);
    if (!account) return undefined;
    return copyAccessTokenClaims(account);
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// token exchange (RFC 8693), a custom grant type

const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const TOKEN_EXCHANGE_PARAMS = ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
  'requested_token_type', 'resource', 'audience', 'scope'];
const exchangeLog = [];

function b64urlJson(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

// A JWT access token of this provider, verified with its own keys (current and kept ones): its claims.
function verifyJwtAccessToken(token) {
  const parts = token.split('.');
  let header;
  let claims;
  try {
    header = b64urlJson(parts[0]);
    claims = b64urlJson(parts[1]);
  } catch {
    throw new errors.InvalidRequest('subject_token is not a valid JWT');
  }
  const jwk = signingJwks.find((k) => k.kid === header.kid);
  if (!jwk || header.alg !== jwk.alg) throw new errors.InvalidRequest('subject_token is not signed by this provider');
  const key = crypto.createPublicKey({ key: publicJwk(jwk), format: 'jwk' });
  const signature = Buffer.from(parts[2], 'base64url');
  const verifyKey = jwk.alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key;
  if (!crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), verifyKey, signature)) {
    throw new errors.InvalidRequest('subject_token signature is invalid');
  }
  if (header.typ !== 'at+jwt') throw new errors.InvalidRequest('subject_token is not an access token');
  if (claims.iss !== issuer) throw new errors.InvalidRequest('subject_token was issued by someone else');
  if (typeof claims.exp !== 'number' || claims.exp <= now()) throw new errors.InvalidRequest('subject_token has expired');
  if (typeof claims.sub !== 'string' || !claims.sub) throw new errors.InvalidRequest('subject_token has no subject');
  return claims;
}

async function subjectClaims(provider, token) {
  if (token.split('.').length === 3) return verifyJwtAccessToken(token);
  const opaque = await provider.AccessToken.find(token);  // undefined when unknown, expired or revoked
  if (!opaque?.accountId) throw new errors.InvalidRequest('subject_token is not an active access token');
  return { sub: opaque.accountId, client_id: opaque.clientId, scope: opaque.scope, aud: opaque.aud, jti: opaque.jti };
}

function listParam(value) {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

async function tokenExchange(ctx) {
  const entry = { client_id: ctx.oidc.client.clientId, ok: false };
  exchangeLog.push(entry);
  try {
    await issueExchangedToken(ctx, entry);
    entry.ok = true;
  } catch (err) {
    entry.error = err?.error ?? 'server_error';
    throw err;
  }
}

async function issueExchangedToken(ctx, entry) {
  const { client, params, provider } = ctx.oidc;
  if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter subject_token');
  if (!params.subject_token_type) throw new errors.InvalidRequest('missing required parameter subject_token_type');
  if (![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(params.subject_token_type)) {
    throw new errors.InvalidRequest('unsupported subject_token_type');
  }
  if (params.actor_token !== undefined || params.actor_token_type !== undefined) {
    throw new errors.InvalidRequest('actor_token is not supported: the authenticated client is the actor');
  }
  if (params.requested_token_type !== undefined
    && ![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(params.requested_token_type)) {
    throw new errors.InvalidRequest('unsupported requested_token_type');
  }

  const targets = [...new Set([...listParam(params.resource), ...listParam(params.audience)])];
  if (targets.length === 0 && config.defaultResource) targets.push(config.defaultResource);
  if (targets.length !== 1) throw new errors.InvalidTarget('exactly one resource or audience is required');
  const [target] = targets;
  const info = resourceServerInfo(target);  // invalid_target for an unknown one

  const subject = await subjectClaims(provider, params.subject_token);
  entry.sub = subject.sub;
  entry.subject_jti = subject.jti;
  const subjectAudiences = config.tokenExchange?.subjectAudiences;
  if (Array.isArray(subjectAudiences)
    && !listParam(subject.aud).some((aud) => subjectAudiences.includes(aud))) {
    throw new errors.InvalidRequest('subject_token audience is not accepted for token exchange');
  }
  if (subject.may_act?.sub !== undefined && subject.may_act.sub !== client.clientId) {
    throw new errors.InvalidRequest('the subject token does not allow this client to act for its subject');
  }

  const held = new Set((subject.scope ?? '').split(' ').filter(Boolean));
  const available = new Set(info.scope.split(' '));
  let scopes;
  if (params.scope) {
    scopes = params.scope.split(' ').filter(Boolean);
    const beyond = scopes.filter((s) => !held.has(s) || !available.has(s));
    if (beyond.length) throw new errors.InvalidScope(`scope beyond the subject token: ${beyond.join(' ')}`);
  } else {
    scopes = [...held].filter((s) => available.has(s));
  }

  const token = new provider.AccessToken({
    accountId: subject.sub,
    client,
    gty: 'token_exchange',
    scope: scopes.join(' ') || undefined,
    resourceServer: new provider.ResourceServer(target, info),
  });
  const act = { sub: client.clientId, ...(subject.act ? { act: subject.act } : {}) };
  exchangedTokens.set(token, { act, subjectClaims: subject });
  const value = await token.save();
  entry.target = target;
  entry.jti = token.jti;
  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    ...(token.scope ? { scope: token.scope } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// the provider

const resourceScope = config.scopes.join(' ');

function checkResource(indicator) {
  let url;
  try {
    url = new URL(indicator);
  } catch {
    throw new errors.InvalidTarget('resource indicator must be an absolute URI');
  }
  if (!['http:', 'https:'].includes(url.protocol)) {
    throw new errors.InvalidTarget('resource indicator must be an http(s) URL');
  }
  if (Array.isArray(config.resources) && !config.resources.includes(indicator)) {
    throw new errors.InvalidTarget('resource indicator is not known to this test provider');
  }
}

function resourceServerInfo(indicator) {
  checkResource(indicator);
  return {
    scope: resourceScope,
    accessTokenTTL: config.accessTokenTTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: config.accessTokenSigningAlg } },
  };
}

const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

function providerOptions() {
  return {
    adapter: SharedAdapter,
    jwks: { keys: structuredClone(signingJwks) },
    clients: structuredClone(staticClients),
    findAccount,
    extraTokenClaims,
    claims: config.claims,
    scopes: ['openid', 'offline_access', ...config.scopes],
    cookies: { keys: cookieKeys },
    pkce: { required: () => true },
    // OAuth 2.1: the authorization-code flow only (no implicit or hybrid response types).
    responseTypes: ['code'],
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: 'RS256',
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    issueRefreshToken: async (_ctx, client, code) => config.refreshTokens
      && client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: { enabled: true, initialAccessToken: false },
      revocation: { enabled: true },
      introspection: { enabled: false },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? config.defaultResource ?? undefined,
        // The token request need not repeat the resource the authorization request named.
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => resourceServerInfo(indicator),
      },
    },
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.accessTokenTTL,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.accessTokenTTL,
      AuthorizationCode: config.ttl.AuthorizationCode,
      IdToken: config.ttl.IdToken,
      RefreshToken: config.ttl.RefreshToken,
      Interaction: config.ttl.Interaction,
      Session: config.ttl.Session,
      Grant: config.ttl.Grant,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'application/json';
      ctx.body = out;
    },
  };
}

async function logoutSource(ctx, form) {
  ctx.type = 'html';
  ctx.body = `<!doctype html><title>logout</title>${form}<button form="op.logoutForm" name="logout" value="yes">Sign out</button>`;
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = '<!doctype html><title>signed out</title>signed out';
}

let issuer;
let provider;
let providerCallback;

function buildProvider() {
  const next = new Provider(issuer, providerOptions());
  next.registerGrantType(TOKEN_EXCHANGE_GRANT, tokenExchange, TOKEN_EXCHANGE_PARAMS, ['resource', 'audience']);
  for (const event of ['server_error', 'grant.error', 'authorization.error', 'registration_create.error',
    'interaction.error', 'end_session.error', 'userinfo.error']) {
    next.on(event, (_ctx, err) => log(event, err?.name ?? '', err?.message ?? String(err),
      err?.error_description ?? ''));
  }
  provider = next;
  providerCallback = next.callback();
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP plumbing: interactions and test hooks outside Koa, everything else straight to the provider

function send(res, status, body, type = 'application/json') {
  const payload = type === 'application/json' ? JSON.stringify(body) : String(body);
  res.writeHead(status, { 'Content-Type': `${type}; charset=utf-8`, 'Cache-Control': 'no-store', 'Content-Length': Buffer.byteLength(payload) });
  res.end(payload);
}

async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function consentResult(interaction) {
  const { prompt: { details }, params, session } = interaction;
  const grant = interaction.grantId
    ? await provider.Grant.find(interaction.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  return interaction.grantId ? {} : { grantId };
}

async function handleInteraction(req, res, uid, action) {
  const interaction = await provider.interactionDetails(req, res);
  if (interaction.uid !== uid) {
    send(res, 400, { error: 'invalid_request', error_description: 'interaction uid does not match its cookie' });
    return;
  }
  const { prompt, params } = interaction;

  if (action === 'abort') {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'the user refused' }, { mergeWithLastSubmission: false });
    return;
  }

  if (prompt.name === 'consent') {
    await provider.interactionFinished(req, res, { consent: await consentResult(interaction) }, { mergeWithLastSubmission: true });
    return;
  }

  if (prompt.name !== 'login') {
    send(res, 500, { error: 'server_error', error_description: `unhandled prompt ${prompt.name}` });
    return;
  }

  let login;
  if (action === 'login') {
    if (req.method !== 'POST') {
      send(res, 405, { error: 'invalid_request', error_description: 'POST the login form' });
      return;
    }
    login = new URLSearchParams(await readBody(req)).get('user') ?? '';
  } else if (params.login_hint && accountFor(params.login_hint)) {
    login = params.login_hint;
  } else {
    const options = Object.keys(users).map((name) => `<option>${escapeHtml(name)}</option>`).join('');
    send(res, 200, `<!doctype html><title>login</title><form method="post" action="/interaction/${escapeHtml(uid)}/login">`
      + `<select name="user">${options}</select><button type="submit">Sign in</button></form>`
      + `<form method="post" action="/interaction/${escapeHtml(uid)}/abort"><button type="submit">Cancel</button></form>`, 'text/html');
    return;
  }

  const account = accountFor(login);
  if (!account) {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: `unknown user ${login}` }, { mergeWithLastSubmission: false });
    return;
  }
  // Login and consent in one step: oidc-provider re-checks the policy on resume and prompts again (and we consent
  // then) only for what this does not cover, e.g. an explicit prompt=consent.
  await provider.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
}

function isLoopback(address) {
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

function rotateKeys(keepOld) {
  const old = signingJwks;
  const fresh = generateKeys();
  signingJwks = keepOld ? [...fresh, ...old] : fresh;
  buildProvider();
  log(`rotated keys: signing ${fresh.map((k) => k.kid).join(', ')}; ${keepOld ? 'kept' : 'removed'} ${old.map((k) => k.kid).join(', ')}`);
  return {
    signing: activeKids(),
    access_token_kid: activeKids()[config.accessTokenSigningAlg],
    removed: keepOld ? [] : old.map((k) => k.kid),
    jwks: { keys: signingJwks.map(publicJwk) },
  };
}

async function handleTestHook(req, res, path) {
  if (!isLoopback(req.socket.remoteAddress)) {
    send(res, 403, { error: 'forbidden', error_description: 'test hooks answer loopback peers only' });
    return;
  }
  if (path === '/__test__/config' && req.method === 'GET') {
    send(res, 200, { ...config, users, port: server.address().port, issuer });
  } else if (path === '/__test__/keys' && req.method === 'GET') {
    send(res, 200, {
      keys: structuredClone(signingJwks),
      signing: activeKids(),
      access_token_alg: config.accessTokenSigningAlg,
      access_token_kid: activeKids()[config.accessTokenSigningAlg],
    });
  } else if (path === '/__test__/exchanges' && req.method === 'GET') {
    send(res, 200, exchangeLog);
  } else if (path === '/__test__/rotate-keys' && req.method === 'POST') {
    const text = await readBody(req);
    const body = text ? JSON.parse(text) : {};
    send(res, 200, rotateKeys(body.keep_old !== false));
  } else if (path.startsWith('/__test__/users/') && req.method === 'PUT') {
    const login = decodeURIComponent(path.slice('/__test__/users/'.length));
    const claims = JSON.parse(await readBody(req));
    users[login] = deepMerge(isPlainObject(users[login]) ? users[login] : {}, claims);
    send(res, 200, users[login]);
  } else {
    send(res, 404, { error: 'not_found' });
  }
}

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?$/;

async function dispatch(req, res) {
  const { pathname } = new URL(req.url, 'http://localhost');
  try {
    if (pathname.startsWith('/__test__/')) {
      await handleTestHook(req, res, pathname);
      return;
    }
    const match = INTERACTION.exec(pathname);
    if (match) {
      await handleInteraction(req, res, match[1], match[2]);
      return;
    }
    if (!config.oauthAuthorizationServerMetadata && pathname === '/.well-known/oauth-authorization-server') {
      send(res, 404, { error: 'not_found' });
      return;
    }
    if (!providerCallback) {
      send(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
      return;
    }
    providerCallback(req, res);
  } catch (err) {
    log('handler error', pathname, err?.stack ?? String(err));
    if (!res.headersSent) {
      const status = err instanceof errors.OIDCProviderError ? err.statusCode : 500;
      send(res, status, { error: err?.error ?? 'server_error', error_description: err?.error_description ?? err?.message ?? String(err) });
    } else {
      res.destroy();
    }
  }
}

const server = http.createServer((req, res) => {
  dispatch(req, res);
});
server.keepAliveTimeout = 5000;

function shutdown(signal) {
  log(`${signal}: closing`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.listen({ port, host: HOST }, () => {
  const address = server.address();
  issuer = `http://${HOST}:${address.port}`;
  buildProvider();
  process.stdout.write(`READY ${issuer}\n`);
});
