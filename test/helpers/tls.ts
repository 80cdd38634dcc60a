// A throwaway self-signed certificate for 127.0.0.1, made with the openssl command line.

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'

export function generateSelfSigned (t: Test): { key: string, cert: string, certFile: string } {
  // Its own directory: a later t.testdir() in the same test would wipe a shared one.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2m-proxy-tls-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const keyFile = path.join(dir, 'key.pem')
  const certFile = path.join(dir, 'cert.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile,
    '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' })
  return { key: fs.readFileSync(keyFile, 'utf8'), cert: fs.readFileSync(certFile, 'utf8'), certFile }
}
