/**
 * ByteTrack multi-object tracking, as supervision's `ByteTrack` does it (tracker/byte_tracker/core.py).
 * One `ByteTracker` per stream: it owns its tracks and its id counters. Association is class-agnostic and by
 * IoU only; class ids ride along on the detections.
 *
 * Per frame (`update`):
 * 1. detections with score > activation threshold are "high"; 0.1 < score < threshold are "low" (a score equal
 *    to the threshold is neither, as in supervision);
 * 2. confirmed tracks and lost tracks are Kalman-predicted and matched to the high detections on
 *    1 − IoU·score (ByteTrack's `fuse_score`), cost ≤ `minimumMatchingThreshold`;
 * 3. still-unmatched tracked tracks are matched to the low detections on 1 − IoU, cost ≤ 0.5; those left over
 *    become lost;
 * 4. unconfirmed tracks (started last frame, not predicted) are matched to the leftover high detections on the
 *    fused cost ≤ 0.7; unmatched ones are removed;
 * 5. leftover high detections with score ≥ threshold + 0.1 start new tracks;
 * 6. lost tracks older than the buffer are removed (they leave the lost list one frame later, so a track can
 *    still be found again after `buffer + 1` missed frames, as in supervision); near-duplicate tracked/lost
 *    pairs (IoU > 0.85) keep only the longer-lived one.
 * The output is the input detections that match a confirmed track at IoU ≥ 0.5, in input order, with its
 * external id as `trackIds`; detections matching no such track are dropped.
 */
import { type Detections, detectionCount, emptyDetections, selectDetections } from '../detect/detections.js';
import { type CostMatrix, linearAssignment } from './assignment.js';
import { IdCounter, NO_ID, Track, type TrackIds } from './track.js';

export interface ByteTrackerOptions {
  /** Scores above this are high detections; new tracks need this + 0.1. */
  trackActivationThreshold: number;
  /** Frames (at 30 fps) a lost track is kept. */
  lostTrackBuffer: number;
  /** Largest fused cost (1 − IoU·score) accepted in the first association. */
  minimumMatchingThreshold: number;
  frameRate: number;
  /** Consecutive matched frames before a new track is shown. */
  minimumConsecutiveFrames: number;
}

/** supervision `ByteTrack.__init__` defaults. */
export const DEFAULT_BYTE_TRACKER_OPTIONS: Readonly<ByteTrackerOptions> = Object.freeze({
  trackActivationThreshold: 0.25,
  lostTrackBuffer: 30,
  minimumMatchingThreshold: 0.8,
  frameRate: 30,
  minimumConsecutiveFrames: 1,
});

/** Lower bound (exclusive) of the low-score detections of the second association (core.py). */
export const LOW_SCORE_FLOOR = 0.1;
/** New tracks need a score of at least activation threshold + this (core.py `det_thresh`). */
const NEW_TRACK_MARGIN = 0.1;
const SECOND_ROUND_MAX_COST = 0.5;
const UNCONFIRMED_MAX_COST = 0.7;
/** The output step pairs detections with tracks at IoU ≥ 0.5. */
const OUTPUT_MAX_COST = 0.5;
/** Tracked and lost tracks closer than this IoU distance are duplicates. */
const DUPLICATE_MAX_DISTANCE = 0.15;

export class ByteTracker {
  readonly options: Readonly<ByteTrackerOptions>;
  /** Frames a lost track survives: frame_rate / 30 × lost_track_buffer, truncated. */
  readonly maxTimeLost: number;
  private frameId = 0;
  private tracked: Track[] = [];
  private lost: Track[] = [];
  /** Tracks removed in the previous frame; they are dropped from `lost` in the next one. */
  private removed: Track[] = [];
  private readonly ids: TrackIds = { internal: new IdCounter(0), external: new IdCounter(1) };

  constructor(options: Partial<ByteTrackerOptions> = {}) {
    this.options = Object.freeze({ ...DEFAULT_BYTE_TRACKER_OPTIONS, ...options });
    this.maxTimeLost = Math.trunc((this.options.frameRate / 30) * this.options.lostTrackBuffer);
  }

  /** Tracks one frame; returns the detections that belong to confirmed tracks, with `trackIds`. */
  update(d: Detections): Detections {
    const tracks = this.step(d);
    if (tracks.length === 0) return { ...emptyDetections(), trackIds: new Int32Array(0) };
    const n = detectionCount(d);
    const detectionBoxes: Float64Array[] = [];
    for (let i = 0; i < n; i++) detectionBoxes.push(Float64Array.from(d.boxes.subarray(i * 4, i * 4 + 4)));
    const cost = iouDistance(
      detectionBoxes,
      tracks.map((t) => t.box()),
    );
    const ids = new Int32Array(n).fill(NO_ID);
    for (const [row, col] of linearAssignment(cost, OUTPUT_MAX_COST).matches) ids[row] = tracks[col].externalId;
    const keep: number[] = [];
    for (let i = 0; i < n; i++) if (ids[i] !== NO_ID) keep.push(i);
    const kept = selectDetections(d, keep);
    const trackIds = Int32Array.from(keep, (i) => ids[i]);
    return { boxes: kept.boxes, scores: kept.scores, classIds: kept.classIds, trackIds };
  }

  /** Forgets every track and restarts the frame count and both id counters. */
  reset(): void {
    this.frameId = 0;
    this.ids.internal.reset();
    this.ids.external.reset();
    this.tracked = [];
    this.lost = [];
    this.removed = [];
  }

  /** supervision's `update_with_tensors`: advances one frame and returns the confirmed tracked tracks. */
  private step(d: Detections): Track[] {
    this.frameId += 1;
    const frameId = this.frameId;
    const { trackActivationThreshold: threshold, minimumMatchingThreshold } = this.options;
    const activated: Track[] = [];
    const refound: Track[] = [];
    const newlyLost: Track[] = [];
    const newlyRemoved: Track[] = [];

    const { high, low } = this.splitByScore(d);
    const unconfirmed = this.tracked.filter((t) => !t.isActivated);
    const confirmed = this.tracked.filter((t) => t.isActivated);

    // First association: confirmed + lost tracks against high detections.
    const pool = jointTracks(confirmed, this.lost);
    for (const t of pool) t.predict();
    const firstCost = fuseScore(iouDistance(boxesOf(pool), boxesOf(high)), high);
    const first = linearAssignment(firstCost, minimumMatchingThreshold);
    for (const [ti, di] of first.matches) {
      const track = pool[ti];
      if (track.state === 'tracked') {
        track.update(high[di], frameId);
        activated.push(track);
      } else {
        track.reactivate(high[di], frameId);
        refound.push(track);
      }
    }

    // Second association: tracks still tracked but unmatched against low detections.
    const remainingTracked = first.unmatchedRows.map((i) => pool[i]).filter((t) => t.state === 'tracked');
    const second = linearAssignment(iouDistance(boxesOf(remainingTracked), boxesOf(low)), SECOND_ROUND_MAX_COST);
    for (const [ti, di] of second.matches) {
      remainingTracked[ti].update(low[di], frameId);
      activated.push(remainingTracked[ti]);
    }
    for (const ti of second.unmatchedRows) {
      const track = remainingTracked[ti];
      if (track.state !== 'lost') {
        track.state = 'lost';
        newlyLost.push(track);
      }
    }

    // Unconfirmed tracks against the high detections nobody took.
    const leftover = first.unmatchedCols.map((i) => high[i]);
    const thirdCost = fuseScore(iouDistance(boxesOf(unconfirmed), boxesOf(leftover)), leftover);
    const third = linearAssignment(thirdCost, UNCONFIRMED_MAX_COST);
    for (const [ti, di] of third.matches) {
      unconfirmed[ti].update(leftover[di], frameId);
      activated.push(unconfirmed[ti]);
    }
    for (const ti of third.unmatchedRows) {
      unconfirmed[ti].state = 'removed';
      newlyRemoved.push(unconfirmed[ti]);
    }

    // New tracks from what is left, if confident enough.
    for (const di of third.unmatchedCols) {
      const track = leftover[di];
      if (track.score < threshold + NEW_TRACK_MARGIN) continue;
      track.activate(frameId);
      activated.push(track);
    }

    this.commitFrame(activated, refound, newlyLost, newlyRemoved);
    return this.tracked.filter((t) => t.isActivated);
  }

  /** High (> threshold) and low (0.1 < score < threshold) detections, each as an un-started track, in input order. */
  private splitByScore(d: Detections): { high: Track[]; low: Track[] } {
    const threshold = this.options.trackActivationThreshold;
    const high: Track[] = [];
    const low: Track[] = [];
    for (let i = 0; i < detectionCount(d); i++) {
      const score = d.scores[i];
      const into = score > threshold ? high : score > LOW_SCORE_FLOOR && score < threshold ? low : undefined;
      const box = Float64Array.from(d.boxes.subarray(i * 4, i * 4 + 4));
      into?.push(new Track(box, score, this.options.minimumConsecutiveFrames, this.ids));
    }
    return { high, low };
  }

  /** Expires old lost tracks and rebuilds the tracked/lost/removed lists, in supervision's order of operations. */
  private commitFrame(activated: Track[], refound: Track[], newlyLost: Track[], newlyRemoved: Track[]): void {
    for (const track of this.lost) {
      if (this.frameId - track.frameId > this.maxTimeLost) {
        track.state = 'removed';
        newlyRemoved.push(track);
      }
    }
    let tracked = this.tracked.filter((t) => t.state === 'tracked');
    tracked = jointTracks(jointTracks(tracked, activated), refound);
    let lost = subTracks(this.lost, tracked);
    lost.push(...newlyLost);
    // Last frame's removals leave the lost list only now (this frame's, next frame).
    lost = subTracks(lost, this.removed);
    this.removed = newlyRemoved;
    [this.tracked, this.lost] = removeDuplicateTracks(tracked, lost);
  }
}

function boxesOf(tracks: readonly Track[]): Float64Array[] {
  return tracks.map((t) => t.box());
}

/** 1 − IoU between every box of `a` (rows) and of `b` (columns); a zero-area union counts as IoU 0. */
export function iouDistance(a: readonly ArrayLike<number>[], b: readonly ArrayLike<number>[]): CostMatrix {
  const data = new Float64Array(a.length * b.length);
  for (let i = 0; i < a.length; i++) {
    const p = a[i];
    const areaP = (p[2] - p[0]) * (p[3] - p[1]);
    for (let j = 0; j < b.length; j++) {
      const q = b[j];
      const w = Math.max(0, Math.min(p[2], q[2]) - Math.max(p[0], q[0]));
      const h = Math.max(0, Math.min(p[3], q[3]) - Math.max(p[1], q[1]));
      const inter = w * h;
      const union = areaP + (q[2] - q[0]) * (q[3] - q[1]) - inter;
      data[i * b.length + j] = 1 - (union > 0 ? inter / union : 0);
    }
  }
  return { data, rows: a.length, cols: b.length };
}

/** ByteTrack's `fuse_score`: cost 1 − IoU·score, with the score of each column's detection. */
export function fuseScore(cost: CostMatrix, detections: readonly Track[]): CostMatrix {
  const data = new Float64Array(cost.data.length);
  for (let i = 0; i < cost.rows; i++) {
    for (let j = 0; j < cost.cols; j++) {
      const k = i * cost.cols + j;
      data[k] = 1 - (1 - cost.data[k]) * detections[j].score;
    }
  }
  return { data, rows: cost.rows, cols: cost.cols };
}

/** `a` then the tracks of `b` whose internal id `a` lacks. */
function jointTracks(a: readonly Track[], b: readonly Track[]): Track[] {
  const seen = new Set<number>();
  const out: Track[] = [];
  for (const t of [...a, ...b]) {
    if (seen.has(t.internalId)) continue;
    seen.add(t.internalId);
    out.push(t);
  }
  return out;
}

/** The tracks of `a` whose internal id is not in `b`. */
function subTracks(a: readonly Track[], b: readonly Track[]): Track[] {
  const drop = new Set(b.map((t) => t.internalId));
  return a.filter((t) => !drop.has(t.internalId));
}

/** Of each tracked/lost pair overlapping at IoU > 0.85, drop the one tracked for fewer frames (ties: the tracked). */
function removeDuplicateTracks(tracked: Track[], lost: Track[]): [Track[], Track[]] {
  const distance = iouDistance(boxesOf(tracked), boxesOf(lost));
  const dropTracked = new Set<number>();
  const dropLost = new Set<number>();
  for (let i = 0; i < tracked.length; i++) {
    for (let j = 0; j < lost.length; j++) {
      if (!(distance.data[i * lost.length + j] < DUPLICATE_MAX_DISTANCE)) continue;
      const ageTracked = tracked[i].frameId - tracked[i].startFrame;
      const ageLost = lost[j].frameId - lost[j].startFrame;
      if (ageTracked > ageLost) dropLost.add(j);
      else dropTracked.add(i);
    }
  }
  return [tracked.filter((_, i) => !dropTracked.has(i)), lost.filter((_, j) => !dropLost.has(j))];
}
