// Admin listener routes: health now; operator routes build on this.

import type { FastifyInstance } from 'fastify'

export interface AdminPluginOptions {
  isReady: () => boolean
}

export async function adminPlugin (app: FastifyInstance, _options: AdminPluginOptions): Promise<void> {
  app.get('/healthz', async () => ({ status: 'ok' }))
}
