/**
 * PROXY_FROM and PROXY_TIMEOUT_MS: the CIDR list is parsed strictly at start (a bad entry stops the trap with the
 * variable and the entry named), and matched against peers as a dual-stack listener reports them.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { cidrMatcher, parseCidrList } from '../src/ip-address';
import { loadSettings } from '../src/config/env';
import { ConfigError } from '../src/errors';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'spamtrapd-proxycfg-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function load(env: Record<string, string>) {
  return loadSettings(env, { cwd: tmp });
}

describe('parseCidrList', () => {
  test('empty means off; entries come back canonical; a bare address is one host', () => {
    assert.deepEqual(parseCidrList('PROXY_FROM', null), []);
    assert.deepEqual(parseCidrList('PROXY_FROM', '  '), []);
    assert.deepEqual(parseCidrList('PROXY_FROM', '10.0.0.0/8, 192.0.2.7 ,2001:DB8:0::/32,::1'), ['10.0.0.0/8', '192.0.2.7/32', '2001:db8::/32', '::1/128']);
    assert.deepEqual(parseCidrList('PROXY_FROM', '0.0.0.0/0,::/0'), ['0.0.0.0/0', '::/0']);
  });

  const BAD: Array<[string, RegExp]> = [
    ['10.0.0.0/8,,192.0.2.0/24', /empty entry/],
    ['10.0.0.0/8,', /empty entry/],
    ['10.0.0.0/33', /prefix length must be 0 to 32/],
    ['2001:db8::/129', /prefix length must be 0 to 128/],
    ['10.0.0.0/08', /prefix length/],
    ['10.0.0.0/', /prefix length/],
    ['10.0.0.0/x', /prefix length/],
    ['10.0.0.1/24', /host bits are set: did you mean 10\.0\.0\.0\/24 or 10\.0\.0\.1\/32\?/],
    ['2001:db8::1/64', /did you mean 2001:db8::\/64/],
    ['10.1/16', /not an IPv4 address/],
    ['010.0.0.0/8', /not an IPv4 address/],
    ['balancer.example', /not an IPv4 address/],
    ['fe80::1%eth0', /not an IPv4 address/],
    ['[::1]', /not an IPv4 address/],
    ['::ffff:10.0.0.0/104', /IPv4-mapped/],
    ['10.0.0.0/8 192.0.2.0/24', /prefix length|not an IPv4/],
  ];
  for (const [value, why] of BAD) {
    test(`refuses ${JSON.stringify(value)} naming the variable and the entry`, () => {
      assert.throws(
        () => parseCidrList('PROXY_FROM', value),
        (err: unknown) => err instanceof ConfigError && err.where === 'PROXY_FROM' && /invalid entry "/.test(err.reason) && why.test(err.reason),
      );
    });
  }
});

describe('cidrMatcher', () => {
  test('IPv4 and IPv6 networks; IPv4-mapped peers match IPv4 networks; other peers never match', () => {
    const trusted = cidrMatcher(['10.0.0.0/8', '192.0.2.7/32', '2001:db8::/32']);
    for (const peer of ['10.0.0.1', '10.255.255.255', '::ffff:10.0.0.1', '::FFFF:192.0.2.7', '192.0.2.7', '2001:db8::1', '2001:db8:ffff::9']) {
      assert.equal(trusted(peer), true, peer);
    }
    for (const peer of ['11.0.0.1', '192.0.2.8', '::ffff:192.0.2.8', '2001:db9::1', '::1', '127.0.0.1', '', undefined, 'not an address']) {
      assert.equal(trusted(peer), false, String(peer));
    }
  });

  test('an empty list trusts nobody; ::/0 trusts no IPv4 peer, 0.0.0.0/0 no IPv6 peer', () => {
    assert.equal(cidrMatcher([])('127.0.0.1'), false);
    assert.equal(cidrMatcher(['::/0'])('::ffff:127.0.0.1'), false);
    assert.equal(cidrMatcher(['::/0'])('::1'), true);
    assert.equal(cidrMatcher(['0.0.0.0/0'])('::ffff:127.0.0.1'), true);
    assert.equal(cidrMatcher(['0.0.0.0/0'])('::1'), false);
  });
});

describe('loadSettings', () => {
  test('defaults: PROXY protocol off, 5 s header deadline', () => {
    const cfg = load({});
    assert.deepEqual(cfg.proxyFrom, []);
    assert.equal(cfg.proxyTimeoutMs, 5000);
  });

  test('PROXY_FROM and PROXY_TIMEOUT_MS are read and validated', () => {
    const cfg = load({ PROXY_FROM: '127.0.0.1/32, ::1', PROXY_TIMEOUT_MS: '250' });
    assert.deepEqual(cfg.proxyFrom, ['127.0.0.1/32', '::1/128']);
    assert.ok(Object.isFrozen(cfg.proxyFrom));
    assert.equal(cfg.proxyTimeoutMs, 250);
    assert.throws(() => load({ PROXY_FROM: '127.0.0.1/32,10.0.0.300' }), /^ConfigError: PROXY_FROM: invalid entry "10\.0\.0\.300"/);
    for (const bad of ['99', '60001', '5s', '-1']) {
      assert.throws(
        () => load({ PROXY_TIMEOUT_MS: bad }),
        (err: unknown) => err instanceof ConfigError && err.where === 'PROXY_TIMEOUT_MS' && /from 100 to 60000/.test(err.reason),
        bad,
      );
    }
  });

  test('a PROXY_ typo in .env is warned about', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'dotenv-'));
    fs.writeFileSync(path.join(dir, '.env'), 'PROXY_FORM=10.0.0.0/8\n');
    const cfg = loadSettings({}, { cwd: dir });
    assert.match(cfg.warnings.join('\n'), /unknown variable PROXY_FORM/);
  });
});
