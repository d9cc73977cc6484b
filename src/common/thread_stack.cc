#include "src/common/thread_stack.h"

#include <pthread.h>
#include <sys/mman.h>

namespace ember {

void KeepStackInSmallPages() {
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
  void* low = nullptr;
  size_t size = 0;
  // Advice only: a stack that keeps huge pages costs memory, not behaviour.
  if (pthread_attr_getstack(&attr, &low, &size) == 0) madvise(low, size, MADV_NOHUGEPAGE);
  pthread_attr_destroy(&attr);
}

}  // namespace ember
