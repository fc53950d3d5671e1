export * from './names';
export * from './control';
export * from './writer';
export * from './reader';
export * from './sweep';
export * from './instance-lock';
export * from './writer-thread';
