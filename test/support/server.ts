import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { preload } from '../../src/stream/app.js';

/** Loads the app's preloaded models and listens on a free loopback port: a real server for a test file. */
export async function preloadAndListen(app: FastifyInstance): Promise<AddressInfo> {
  await preload(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error(`unexpected listen address ${String(address)}`);
  return address;
}
