export * from './definitions';
export * from './worker';
export * from './primary';
export * from './queue-gauges';
export * from './http-server';
