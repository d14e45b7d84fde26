/**
 * One tracklet (supervision's `STrack`, tracker/byte_tracker/single_object_track.py). A detection enters the
 * tracker as an un-started `Track` holding its box; `activate` starts it (Kalman state, internal id), `update`
 * and `reactivate` correct it with a matched detection.
 *
 * Two ids, as in supervision: the internal id (from 0) keys the tracker's lists; the external id (from 1) is
 * what callers see, drawn when the track is confirmed — at activation already when
 * `minimumConsecutiveFrames` is 1, else once it has been updated that many times in a row.
 */
import { type KalmanState, initiate, predict, update } from './kalman.js';

export type TrackState = 'new' | 'tracked' | 'lost' | 'removed';

/** supervision's `IdCounter.NO_ID`. */
export const NO_ID = -1;

/** Hands out consecutive ids from `start`; one per tracker, so streams never share numbering. */
export class IdCounter {
  private nextId: number;
  constructor(private readonly start: number) {
    this.nextId = start;
  }
  next(): number {
    return this.nextId++;
  }
  reset(): void {
    this.nextId = this.start;
  }
}

export interface TrackIds {
  readonly internal: IdCounter;
  readonly external: IdCounter;
}

export class Track {
  state: TrackState = 'new';
  /** Confirmed: shown in the output (and matched in the first association round). */
  isActivated = false;
  startFrame = 0;
  /** The last frame this track was matched (or started) in. */
  frameId = 0;
  /** Updates since (re)activation; confirmation happens when it reaches `minimumConsecutiveFrames`. */
  trackletLength = 0;
  internalId = NO_ID;
  externalId = NO_ID;
  private kalman: KalmanState | undefined;

  constructor(
    /** The detection's box, xyxy; used until the Kalman state exists. */
    private readonly detectedBox: Float64Array,
    public score: number,
    private readonly minimumConsecutiveFrames: number,
    private readonly ids: TrackIds,
  ) {}

  /** The current box, xyxy: the Kalman mean once started, else the detection's own box. */
  box(): Float64Array {
    if (this.kalman === undefined) return this.detectedBox;
    return xyahToXyxy(this.kalman.mean);
  }

  /** Kalman prediction for this frame; a track not currently tracked has its height velocity zeroed first. */
  predict(): void {
    if (this.kalman === undefined) return;
    const mean = this.kalman.mean.slice();
    if (this.state !== 'tracked') mean[7] = 0;
    this.kalman = predict({ mean, covariance: this.kalman.covariance });
  }

  /** Starts a new tracklet from this detection. Tracks started on the first frame are confirmed at once. */
  activate(frameId: number): void {
    this.internalId = this.ids.internal.next();
    this.kalman = initiate(xyxyToXyah(this.detectedBox));
    this.trackletLength = 0;
    this.state = 'tracked';
    if (frameId === 1) this.isActivated = true;
    if (this.minimumConsecutiveFrames === 1) this.externalId = this.ids.external.next();
    this.frameId = frameId;
    this.startFrame = frameId;
  }

  /** A lost track found again: corrected, tracked, its confirmation count restarted. */
  reactivate(detection: Track, frameId: number): void {
    this.kalman = update(this.started(), xyxyToXyah(detection.box()));
    this.trackletLength = 0;
    this.state = 'tracked';
    this.frameId = frameId;
    this.score = detection.score;
  }

  /** A tracked (or unconfirmed) track matched again; confirms it after enough consecutive updates. */
  update(detection: Track, frameId: number): void {
    this.frameId = frameId;
    this.trackletLength += 1;
    this.kalman = update(this.started(), xyxyToXyah(detection.box()));
    this.state = 'tracked';
    if (this.trackletLength === this.minimumConsecutiveFrames) {
      this.isActivated = true;
      if (this.externalId === NO_ID) this.externalId = this.ids.external.next();
    }
    this.score = detection.score;
  }

  private started(): KalmanState {
    if (this.kalman === undefined) throw new Error('track: not started');
    return this.kalman;
  }
}

/** [x1, y1, x2, y2] → [centre x, centre y, w/h, h]. */
export function xyxyToXyah(b: ArrayLike<number>): Float64Array {
  const w = b[2] - b[0];
  const h = b[3] - b[1];
  return Float64Array.of(b[0] + w / 2, b[1] + h / 2, w / h, h);
}

/** [centre x, centre y, w/h, h, …] → [x1, y1, x2, y2]. */
export function xyahToXyxy(m: ArrayLike<number>): Float64Array {
  const h = m[3];
  const w = m[2] * h;
  const x1 = m[0] - w / 2;
  const y1 = m[1] - h / 2;
  return Float64Array.of(x1, y1, x1 + w, y1 + h);
}
