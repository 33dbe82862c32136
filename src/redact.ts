/** Remove passwords from connection strings before they reach a log, a status line or Temporal. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|secret|key/i.test(key)) u.searchParams.set(key, '***');
    }
    return u.toString();
  } catch {
    // Not a URL (a libpq keyword string?): mask password=... pairs. Also a URL too
    // malformed to parse (a bad port, an unencoded character): `config check` and
    // connection errors printed it with its password (found by test/e2e/secrets.test.ts),
    // so mask everything between scheme://user: and the last @, then any other
    // scheme://user:password@ in it.
    return redactSecrets(url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:).*@/i, '$1***@'));
  }
}

/** Replace every occurrence of known secrets (e.g. in a driver's error message). */
export function redactText(text: string, urls: string[]): string {
  let out = text;
  for (const url of urls) {
    try {
      const u = new URL(url);
      if (u.password) out = out.split(decodeURIComponent(u.password)).join('***').split(u.password).join('***');
    } catch {
      /* not a URL: nothing extractable */
    }
  }
  return out;
}

/**
 * Mask anything that looks like a credential in free text: the password of
 * any scheme://user:password@host, and libpq password=… pairs. The logger
 * runs every message and string field through this, so a password cannot
 * reach a log even from a driver's error message.
 */
export function redactSecrets(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^\s:@/]*:)([^@\s]+)@/gi, '$1***@')
    .replace(/(\bpassword\s*=\s*)('[^']*'|[^\s&]+)/gi, '$1***');
}
