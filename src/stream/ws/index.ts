/**
 * `GET /v1/stream` (WebSocket): the stream limit at the door, then one `StreamSession` per
 * connection. The tasks served are the handler table below; a task of the protocol without a
 * handler answers `unsupported_task`.
 */
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import type { StreamConfig } from '../../config.js';
import { changeTask } from './change-task.js';
import { classifyTask } from './classify-task.js';
import { detectTask } from './detect-task.js';
import { CLOSE } from './protocol.js';
import { StreamSession, type SessionStats } from './session.js';
import { trackTask } from './track-task.js';
import type { TaskHandler, TaskServices, TaskTable } from './tasks.js';

export { CLOSE, STREAM_TASKS } from './protocol.js';
export type { StreamLimits } from './session.js';
export type { TaskHandler, TaskStream } from './tasks.js';
export type { TrackStreamResult } from './track-task.js';
export type { ChangeStreamResult } from './change-task.js';
export type { ClassifyStreamResult } from './classify-task.js';

/** The open streams of one server (for the limit, shutdown and stats). */
export class StreamHub {
  private readonly sessions = new Set<StreamSession>();

  get size(): number {
    return this.sessions.size;
  }

  add(s: StreamSession): void {
    this.sessions.add(s);
  }

  delete(s: StreamSession): void {
    this.sessions.delete(s);
  }

  stats(): SessionStats[] {
    return [...this.sessions].map((s) => s.stats());
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    streams: StreamHub;
  }
}

export function streamTasks(services: TaskServices): TaskTable {
  const handlers: TaskHandler[] = [detectTask(services), trackTask(services), changeTask(services), classifyTask(services)];
  return new Map(handlers.map((h) => [h.task, h]));
}

/** ws's own message limit: above twice the frame limit a message is not even buffered (close 1009). */
export function transportLimit(c: StreamConfig): number {
  return 2 * c.maxFrameBytes + c.maxHeaderBytes + 4;
}

export async function streamRoutes(app: FastifyInstance): Promise<void> {
  const tasks = streamTasks(app);
  const limits = app.config.stream;
  app.route({
    method: 'GET',
    url: '/stream',
    schema: { hide: true },
    // A plain HTTP request (no upgrade) gets the one error shape.
    handler: async (_req, reply) =>
      reply.status(426).header('upgrade', 'websocket').send({ error: { code: 'upgrade_required', message: '/v1/stream is a WebSocket endpoint; connect with a WebSocket client (specs/protocol.md)' } }),
    wsHandler: (socket: WebSocket, req) => {
      if (app.streams.size >= limits.maxStreams) {
        socket.send(JSON.stringify({ type: 'error', code: 'too_many_streams', message: `the server serves at most ${limits.maxStreams} streams; try again later` }));
        socket.close(CLOSE.tryAgainLater, 'too many streams');
        return;
      }
      app.streams.add(new StreamSession(socket, tasks, limits, req.log, (s) => app.streams.delete(s)));
    },
  });
}
