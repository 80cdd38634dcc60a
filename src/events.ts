// Lifecycle events on node:diagnostics_channel, the way undici and Fastify publish theirs: the session, credential and
// fleet modules publish (each through a plain function given at construction), logging and metrics subscribe, and so
// can an operator's tooling (an APM agent, a tracer) without a line of the proxy changed.
//
// Channels are global to the process, and a process may run several proxies (tests do): every message names the
// ProxyEvents it came from, and a subscription made here sees its own proxy's events only.

import diagnosticsChannel from 'node:diagnostics_channel'
import type { SessionEvent } from './session/events.js'
import type { CredentialsEvent } from './credentials/events.js'
import type { FleetEvent } from './fleet/events.js'

export const EVENT_CHANNELS = {
  session: 'm2m-session-proxy:session',
  credentials: 'm2m-session-proxy:credentials',
  fleet: 'm2m-session-proxy:fleet'
} as const

export interface EventsByChannel {
  session: SessionEvent
  credentials: CredentialsEvent
  fleet: FleetEvent
}

export type EventChannel = keyof EventsByChannel

/** What is published on a channel: the event, and the proxy that published it. */
export interface ProxyEventMessage<C extends EventChannel = EventChannel> {
  readonly source: ProxyEvents
  readonly event: EventsByChannel[C]
}

// Held here for the life of the process: a channel with subscribers is never collected.
const channels = {
  session: diagnosticsChannel.channel(EVENT_CHANNELS.session),
  credentials: diagnosticsChannel.channel(EVENT_CHANNELS.credentials),
  fleet: diagnosticsChannel.channel(EVENT_CHANNELS.fleet)
}

/** One proxy's events: publishers for its modules, subscriptions for its logging and metrics, all ended by close(). */
export class ProxyEvents {
  private readonly subscriptions: Array<() => void> = []

  /** The function a module publishes with; a message is built only when someone listens. */
  publisher<C extends EventChannel> (name: C): (event: EventsByChannel[C]) => void {
    const channel = channels[name]
    return (event) => {
      if (channel.hasSubscribers) channel.publish({ source: this, event } satisfies ProxyEventMessage<C>)
    }
  }

  /** Calls `handler` with each event this proxy publishes on `name`, until close(). */
  subscribe<C extends EventChannel> (name: C, handler: (event: EventsByChannel[C]) => void): void {
    const listener = (message: unknown): void => {
      const { source, event } = message as ProxyEventMessage<C>
      if (source === this) handler(event)
    }
    diagnosticsChannel.subscribe(EVENT_CHANNELS[name], listener)
    this.subscriptions.push(() => { diagnosticsChannel.unsubscribe(EVENT_CHANNELS[name], listener) })
  }

  close (): void {
    for (const unsubscribe of this.subscriptions.splice(0)) unsubscribe()
  }
}
