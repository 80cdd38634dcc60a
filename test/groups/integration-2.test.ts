// One test process for the files of the group "integration-2" (test/helpers/test-groups.ts says why).
import { runGroup } from '../helpers/test-groups.js'

await runGroup('integration-2', import.meta.url)
