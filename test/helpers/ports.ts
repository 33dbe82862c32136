import * as net from 'node:net';

export { freePort } from '../../src/net';

/**
 * A port on 127.0.0.1 that refuses connections for as long as the test
 * holds it: the local end of an open connection of our own (to a server of
 * our own), so no other process can bind it meanwhile — a socket bound
 * without SO_REUSEADDR keeps the port — and nothing listens on it, so a
 * connect to it is refused (ECONNREFUSED), every time. A port merely found
 * free and closed again can be taken by anyone before it is used.
 *
 * `containing`: a port whose number contains these digits (e.g. '403', to
 * check that nothing reads an error's port number as a status code).
 */
export async function heldClosedPort(containing = ''): Promise<{ port: number; release: () => Promise<void> }> {
  const server = net.createServer((s) => s.on('error', () => undefined));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const to = (server.address() as net.AddressInfo).port;
  const candidates = [];
  for (let p = 1024; p < 65536; p++) if (String(p).includes(containing) && p !== to) candidates.push(p);
  for (let i = candidates.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
  }
  for (const port of candidates.slice(0, 200)) {
    const sock = await new Promise<net.Socket | null>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: to, localAddress: '127.0.0.1', localPort: port });
      s.once('connect', () => resolve(s));
      s.once('error', () => resolve(null)); // in use: try another
    });
    if (!sock) continue;
    sock.on('error', () => undefined);
    return {
      port,
      release: async () => {
        sock.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }
  server.close();
  throw new Error(`no port containing '${containing}' could be held on 127.0.0.1`);
}
