export { type Assignment, type CostMatrix, linearAssignment, solveAssignment } from './assignment.js';
export {
  ByteTracker,
  type ByteTrackerOptions,
  DEFAULT_BYTE_TRACKER_OPTIONS,
  fuseScore,
  iouDistance,
  LOW_SCORE_FLOOR,
} from './bytetrack.js';
export { type KalmanState, initiate, predict, project, update } from './kalman.js';
export { xyahToXyxy, xyxyToXyah } from './track.js';
export { LORAT_224, LORAT_378, type LoratGeometry, SingleObjectTracker, type TemplateSetup, type TrackResult, decodeSearch, hannWindow, hannWindow2d } from './lorat.js';
