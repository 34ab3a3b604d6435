Console.WriteLine("allocators");
