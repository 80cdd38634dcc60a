// One test process for the files of the group "integration-5" (test/helpers/test-groups.ts says why).
import { runGroup } from '../helpers/test-groups.js'

await runGroup('integration-5', import.meta.url)
