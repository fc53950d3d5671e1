import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseRoutes, splitByDestination } from '../src/config/routes';
import { countsForListing, listingCopies } from '../src/intel/trap-recipients';

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

describe("a filed message's copies as the listing sees them", () => {
  const routes = parseRoutes(
    'note=ham queue incoming\nrcpt=/^abuse@/ forward smtp://127.0.0.1:10025\nrcpt=/^seed-/ queue seeds listing=no\n* queue incoming\n',
    'config/routes',
  );

  it('splits each destination into the recipients that count and those that do not, in the order given', () => {
    const groups = splitByDestination(
      [
        { address: 'a@trap', note: null },
        { address: 'ham@trap', note: 'ham' },
        { address: 'abuse@trap', note: null },
        { address: 'seed-1@trap', note: null },
        { address: 'b@trap', note: 'x' },
      ],
      routes,
    );
    assert.deepEqual(listingCopies(groups), [
      { queue: 'incoming', recipients: ['a@trap', 'b@trap'], trap: true },
      { queue: 'incoming', recipients: ['ham@trap'], trap: false },
      { queue: 'forward-127.0.0.1-10025', recipients: ['abuse@trap'], trap: false },
      { queue: 'seeds', recipients: ['seed-1@trap'], trap: false },
    ]);
  });
});
