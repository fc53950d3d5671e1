// Entry point of the forward relay process (forked by the primary).
import { runRelay } from '../src/forward/main';
import { runMain } from '../src/process-main';

runMain('relay', runRelay);
