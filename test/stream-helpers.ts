/**
 * What the stream tests share: a real server on a real port (the official LeYOLO-Nano checkpoint),
 * the tennis video, and readers that check the protocol's invariants on what a client received.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import { connect, type DetectStreamResult, type DroppedMessage, type ErrorMessage, type ResultMessage, type ServerMessage, type StreamClient } from '../src/client/index.js';
import { defaultConfig, type StreamConfig } from '../src/config.js';
import { buildApp } from '../src/stream/app.js';
import { preloadAndListen } from './support/server.js';

export const CHECKPOINT = fileURLToPath(new URL('../../shared/fixtures/weights/LeYOLONano.pt', import.meta.url));
export const VIDEO_FRAMES = 70;
export const VIDEO_SIZE = { width: 854, height: 480 } as const;

export async function readVideo(): Promise<Buffer[]> {
  const frames: Buffer[] = [];
  for (let i = 0; i < VIDEO_FRAMES; i++) frames.push(await readFile(new URL(`../../shared/fixtures/video-tennis/${String(i).padStart(5, '0')}.jpg`, import.meta.url)));
  return frames;
}

export const readPhoto = (name: string): Promise<Buffer> => readFile(new URL(`../../shared/fixtures/images/${name}`, import.meta.url));

export interface TestServer {
  app: FastifyInstance;
  base: string;
  url: string;
  stream: StreamConfig;
}

export async function startServer(stream: Partial<StreamConfig>): Promise<TestServer> {
  const base = defaultConfig();
  const config = { ...base, port: 0, host: '127.0.0.1', logLevel: 'silent' as const, weights: { 'leyolo-nano': CHECKPOINT }, stream: { ...base.stream, ...stream } };
  const app = await buildApp(config);
  const address = await preloadAndListen(app);
  return { app, base: `http://127.0.0.1:${address.port}`, url: `ws://127.0.0.1:${address.port}/v1/stream`, stream: config.stream };
}

export async function startedClient(server: TestServer, params: Record<string, unknown> = {}): Promise<StreamClient> {
  const client = await connect(server.url);
  await client.start('detect', 'leyolo-nano', params);
  return client;
}

/** An answer to a frame: result, dropped, or an error naming a frame. */
export type FrameAnswer = ResultMessage<DetectStreamResult> | DroppedMessage | (ErrorMessage & { frameId: number });
export type Answer = ServerMessage<DetectStreamResult>;

export function isFrameAnswer(m: Answer): m is FrameAnswer {
  return (m.type === 'result' || m.type === 'dropped' || m.type === 'error') && typeof m.frameId === 'number';
}

/** Reads answers until `count` frames have been answered (other messages are collected too); fails after `timeoutMs`. */
export async function readAnswers(client: StreamClient, count: number, timeoutMs = 30_000): Promise<{ answers: FrameAnswer[]; other: Answer[] }> {
  const answers: FrameAnswer[] = [];
  const other: Answer[] = [];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
  try {
    while (answers.length < count) {
      const m = await Promise.race([client.next(), timeout]);
      if (m === 'timeout') throw new Error(`timed out with ${answers.length} of ${count} answers`);
      if (m === undefined) throw new Error(`the stream closed after ${answers.length} of ${count} answers (${JSON.stringify(await client.closed)})`);
      if (isFrameAnswer(m)) answers.push(m);
      else other.push(m);
    }
  } finally {
    clearTimeout(timer);
  }
  return { answers, other };
}

/** Every frame sent got exactly one answer, and answers came in frame order. */
export function expectOneAnswerPerFrameInOrder(sent: number[], answers: FrameAnswer[]): void {
  expect(answers.map((a) => a.frameId)).toEqual(sent);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms until it holds; fails after `timeoutMs` with `what`. */
export async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
