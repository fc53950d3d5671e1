import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { countsForListing } from '../src/intel/trap-recipients';

const queue = { kind: 'queue' as const };
const forward = { kind: 'forward' as const };

describe('which recipients count for the listing', () => {
  it('counts a trap recipient in a queue, with the default routes', () => {
    assert.equal(countsForListing({ note: null, destination: queue, listing: null }), true);
    assert.equal(countsForListing({ note: 'spamtrap', destination: queue, listing: null }), true);
  });

  it('never counts a ham recipient or a forwarded one, whatever the route says', () => {
    assert.equal(countsForListing({ note: 'ham', destination: queue, listing: null }), false);
    assert.equal(countsForListing({ note: 'ham', destination: queue, listing: true }), false);
    assert.equal(countsForListing({ note: null, destination: forward, listing: null }), false);
    assert.equal(countsForListing({ note: null, destination: forward, listing: true }), false);
  });

  it('lets a route take its queue out of the listing', () => {
    assert.equal(countsForListing({ note: null, destination: queue, listing: false }), false);
  });
});
