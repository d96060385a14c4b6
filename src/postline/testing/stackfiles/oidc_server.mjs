// The postline dev stack's OAuth 2.0 / OpenID Connect server: panva/oidc-provider on loopback HTTPS.
// Usage: node oidc_server.mjs CONFIG.json   (written by `postline dev-stack start`)
//
// Mounted under /<tenant>/v2.0 so MSAL treats it as an Entra-style authority:
//   authority="https://127.0.0.1:PORT/<tenant>", instance_discovery=False
// Grants: client_credentials (tokens carry email = the stack's cc mailbox), device_code + refresh_token
// (tokens carry the approving user's email). Access tokens are RS256 JWTs with header typ "JWT",
// because Dovecot 2.3's local JWT validation rejects the RFC 9068 typ "at+jwt".
// Login and consent are auto-approved: the user is the email given as &login=<email> on the
// verification URL (remembered in a cookie of that browser or HTTP client), else the default user.
import fs from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const BASE = `/${cfg.tenant}/v2.0`;
const ISSUER = `https://${cfg.host}:${cfg.port}${BASE}`;
const LOGIN_COOKIE = 'postline_login';
const EMAIL_RE = /^[^@\s;,]+@[^@\s;,]+$/;
const signingJwk = JSON.parse(fs.readFileSync(cfg.jwk_file, 'utf8'));
const ttl = cfg.access_token_ttl;

const configuration = {
  clients: [
    { client_id: cfg.cc_client_id, client_secret: cfg.cc_client_secret,
      grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post' },
    { client_id: cfg.device_client_id, application_type: 'native', token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token', 'authorization_code'],
      response_types: ['code'], redirect_uris: ['http://localhost', 'http://127.0.0.1/callback'] },
  ],
  jwks: { keys: [signingJwk] },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    async claims() {
      return { sub: id, email: id, email_verified: true, name: id.split('@')[0], preferred_username: id };
    },
  }),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.resource,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: cfg.resource_scopes.join(' '), audience: cfg.resource, accessTokenTTL: ttl,
        accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  formats: { customizers: { jwt: async (ctx, token, jwt) => { jwt.header = { typ: 'JWT' }; } } },
  // Dovecot maps a token to a mailbox by its email claim (username_attribute = email)
  extraTokenClaims: async (ctx, token) => {
    if (token.accountId) return { email: token.accountId };
    if (token.clientId === cfg.cc_client_id) return { email: cfg.cc_mailbox };
    return undefined;
  },
  interactions: { url: (ctx, interaction) => `${BASE}/interaction/${interaction.uid}` },
  cookies: { keys: [cfg.cookie_key] },
  pkce: { required: () => false },
  ttl: { DeviceCode: 600, AccessToken: ttl, ClientCredentials: ttl, RefreshToken: 86400,
         Grant: 86400, Interaction: 600, Session: 86400 },
  allowOmittingSingleRegisteredRedirectUri: true,
};

const provider = new Provider(ISSUER, configuration);
let lastLogin;  // fallback for clients that drop cookies

function cookieLogin(req) {
  const m = new RegExp(`(?:^|;\\s*)${LOGIN_COOKIE}=([^;]+)`).exec(req.headers.cookie || '');
  return m ? decodeURIComponent(m[1]) : undefined;
}

async function autoInteraction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const login = params.login_hint || cookieLogin(req) || lastLogin || cfg.default_user;
    return provider.interactionFinished(req, res, { login: { accountId: login.toLowerCase() } },
                                        { mergeWithLastSubmission: false });
  }
  const grant = details.grantId ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const d = prompt.details;
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  if (d.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const tls = { key: fs.readFileSync(cfg.key_file), cert: fs.readFileSync(cfg.cert_file) };
const server = https.createServer(tls, async (req, res) => {
  try {
    if (!req.url.startsWith(BASE + '/') && req.url !== BASE) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found; the issuer is ${ISSUER}\n`);
      return;
    }
    const url = new URL(req.url, ISSUER);
    const login = url.searchParams.get('login');
    if (url.pathname === `${BASE}/device` && login) {
      if (!EMAIL_RE.test(login)) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end('login must be an email address\n');
        return;
      }
      lastLogin = login;
      // koa's cookie writer appends to a Set-Cookie header that is already there
      res.setHeader('Set-Cookie', [`${LOGIN_COOKIE}=${encodeURIComponent(login)}; Path=${BASE}; Secure; HttpOnly; SameSite=Lax`]);
    }
    if (new RegExp(`^${BASE}/interaction/[^/]+$`).test(url.pathname)) {
      await autoInteraction(req, res);
      return;
    }
    req.originalUrl = req.url;
    req.url = req.url.slice(BASE.length) || '/';
    callback(req, res);
  } catch (e) {
    console.error(e);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(e));
  }
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description || ''));
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { server.close(); process.exit(0); });
server.listen(cfg.port, cfg.host, () => console.log(`oidc-provider ready: issuer ${ISSUER}`));
