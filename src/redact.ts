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
    // Not a URL (a libpq keyword string?): mask password=... pairs.
    return url.replace(/(password\s*=\s*)('[^']*'|\S+)/gi, '$1***');
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
