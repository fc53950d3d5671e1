export * from './targets';
export * from './state';
export * from './smtp-attempt';
export * from './destination-worker';
export * from './relay';
export * from './reinject';
