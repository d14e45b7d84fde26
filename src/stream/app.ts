/**
 * The fastify application: shared things (configuration, model registry, worker pool, task
 * services) are decorated once; each route group is a plugin with its schemas; one error handler
 * turns every failure into `{"error": {"code", "message"}}` with the right status.
 */
import multipart from '@fastify/multipart';
import swagger from '@fastify/swagger';
import websocket from '@fastify/websocket';
import Fastify, { type ConnectionError, type FastifyError, type FastifyInstance } from 'fastify';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { ServerConfig } from '../config.js';
import { FoveaError } from '../errors.js';
import { ModelRegistry } from '../models/registry.js';
import { ChangeService, specOf as changeSpec } from '../pipeline/change.js';
import { ClassifyService, specOf as classifySpec } from '../pipeline/classify.js';
import { DetectService } from '../pipeline/detect.js';
import { InferencePool } from '../pipeline/pool.js';
import { TrackService } from '../pipeline/track.js';
import { IMAGE_TYPES } from './media.js';
import { changeRoutes } from './routes/change.js';
import { classifyRoutes } from './routes/classify.js';
import { detectRoutes } from './routes/detect.js';
import { modelRoutes } from './routes/models.js';
import { trackRoutes } from './routes/track.js';
import { CLOSE, StreamHub, streamRoutes, transportLimit } from './ws/index.js';

declare module 'fastify' {
  interface FastifyInstance {
    config: ServerConfig;
    registry: ModelRegistry;
    pool: InferencePool;
    detector: DetectService;
    /** ImageNet classification and embeddings (ViG, DeiT). */
    classifier: ClassifyService;
    /** Bitemporal change detection (FSG-Net, care-cd), tiled. */
    changer: ChangeService;
    /** Single-object tracking: REST sessions (expiring when idle) and new runs for streams. */
    tracker: TrackService;
    /** The execution provider sessions actually run on (after any CUDA fallback). */
    ep: string;
  }
}

export { IMAGE_TYPES } from './media.js';

/** fastify's own error codes → the one error shape. */
function classify(err: FastifyError): FoveaError {
  if (err instanceof FoveaError) return err;
  const code = err.code ?? '';
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE' || code === 'FST_REQ_FILE_TOO_LARGE') return new FoveaError(413, 'body_too_large', err.message);
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new FoveaError(415, 'unsupported_media_type', `${err.message}; send image/jpeg, image/png, image/webp or multipart/form-data`);
  if (err.validation) return new FoveaError(422, 'invalid_value', err.message);
  if (code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || code.startsWith('FST_ERR_CTP') || code.startsWith('FST_INVALID_MULTIPART') || code === 'FST_PARTS_LIMIT' || code === 'FST_FILES_LIMIT' || code === 'FST_FIELDS_LIMIT')
    return new FoveaError(400, 'bad_request', err.message);
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return new FoveaError(400, 'bad_request', err.message);
  return new FoveaError(500, 'internal', 'internal error');
}

/**
 * Malformed HTTP (node's parser gives up before fastify sees a request: a bad request line, bytes
 * past a short content-length) gets the one error shape too, not fastify's default body.
 */
function clientError(err: ConnectionError, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message]: [number, string, string] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'request_timeout', 'the request did not arrive in time']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'headers_too_large', 'the request headers are too large']
    : [400, 'bad_request', `malformed HTTP request: ${err.message}`];
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable)
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`);
  socket.destroy(err);
}

export async function buildApp(config: ServerConfig, registry = new ModelRegistry()): Promise<FastifyInstance> {
  const app = Fastify({
    logger: config.logLevel === 'silent' ? false : { level: config.logLevel },
    bodyLimit: config.bodyLimit,
    clientErrorHandler: clientError,
    ajv: { customOptions: { coerceTypes: true, allErrors: false } },
  });
  await registry.addManifests(config.modelsDir);
  for (const [id, path] of Object.entries(config.weights)) await registry.useWeights(id, path);
  for (const [id, named] of Object.entries(config.adapters ?? {})) for (const [name, path] of Object.entries(named)) await registry.addAdapter(id, name, path);
  const pool = new InferencePool({ workers: config.workers, ep: config.ep, maxPixels: config.maxPixels, maxBatch: config.maxBatch, maxDelayMs: config.maxDelayMs, log: (level, m) => app.log[level](m) });
  app.decorate('config', config);
  app.decorate('registry', registry);
  app.decorate('pool', pool);
  const detector = new DetectService(registry, pool);
  const tracker = new TrackService(registry, pool, detector, config.track);
  app.decorate('detector', detector);
  app.decorate('classifier', new ClassifyService(registry, pool, detector));
  app.decorate('changer', new ChangeService(registry, pool, detector));
  app.decorate('tracker', tracker);
  app.decorate('ep', config.ep);
  app.addHook('onClose', async () => {
    tracker.close();
    await pool.close();
  });
  try {
    await tracker.loadAdapters();
  } catch (e) {
    tracker.close();
    await pool.close();
    throw e;
  }

  app.setErrorHandler((err: FastifyError, req, reply) => {
    const e = classify(err);
    if (e.status >= 500) req.log.error({ err }, 'request failed');
    reply.status(e.status).send(e.toJSON());
  });
  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send(new FoveaError(404, 'not_found', `no route ${req.method} ${req.url}`).toJSON());
  });

  // Image bodies arrive as raw bytes; multipart bodies go to @fastify/multipart.
  app.addContentTypeParser([...IMAGE_TYPES], { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (_req, body, done) => done(null, body));
  await app.register(multipart, { limits: { fileSize: config.bodyLimit, files: 4, fields: 16, fieldSize: 64 * 1024, parts: 20 } });

  // OpenAPI from the route schemas; served as JSON at /docs (no UI assets: nothing is fetched from a CDN).
  await app.register(swagger, { openapi: { info: { title: 'fovea', description: 'Real-time vision inference', version: '0.1.0' } } });
  app.get('/docs', { schema: { hide: true } }, async () => app.swagger());

  await app.register(modelRoutes);
  await app.register(detectRoutes, { prefix: '/v1' });
  await app.register(trackRoutes, { prefix: '/v1' });
  await app.register(classifyRoutes, { prefix: '/v1' });
  await app.register(changeRoutes, { prefix: '/v1' });

  // Streams (specs/protocol.md). A ws protocol error (an oversized message: 1009) has already closed
  // the socket with its code; a socket still open after an error (a handler that threw) is ended here.
  app.decorate('streams', new StreamHub());
  await app.register(websocket, {
    options: { maxPayload: transportLimit(config.stream) },
    errorHandler: (err, socket, req) => {
      req.log.debug({ err }, 'stream socket error');
      if (socket.readyState === socket.OPEN) socket.terminate();
    },
    preClose(done) {
      for (const client of this.websocketServer.clients) client.close(CLOSE.goingAway, 'server shutting down');
      this.websocketServer.close();
      done();
    },
  });
  await app.register(streamRoutes, { prefix: '/v1' });
  return app;
}

/** Builds and loads the preloaded models, so readiness means the first request is fast. */
export async function preload(app: FastifyInstance): Promise<void> {
  for (const id of app.config.preload) {
    const info = app.registry.info(id);
    const model =
      info.task === 'track' ? await app.registry.buildTracker(id)
      : info.task === 'classify' ? classifySpec(await app.classifier.spec(id))
      : info.task === 'change' ? changeSpec(await app.changer.spec(id))
      : await app.detector.spec(id);
    const ep = await app.pool.warmup(model);
    // A tracker with adapters also serves streams and sessions from its unmerged graph: load that session too.
    if (app.registry.adapterNames(id).length) await app.pool.warmup(await app.registry.buildTracker(id, { adapters: true }));
    app.ep = ep;
    if (!info.trained) app.log.warn(`${id}: no weights given — serving the seeded (untrained) graph; every answer carries trained: false`);
  }
}
