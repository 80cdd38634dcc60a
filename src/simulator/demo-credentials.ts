// Demo credentials the standalone simulator accepts: published on purpose, they guard nothing real.
export const DEMO_CREDENTIALS = {
  username: 'demo-user',
  password: 'demo-password-1',
  clientId: 'demo-client-id',
  clientSecret: 'demo-client-secret'
} as const
